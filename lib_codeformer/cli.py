"""Command line: ``python -m lib_codeformer COMMAND ...``.

Exit status: 0 success, 1 failure of the work itself, 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .weights import WeightsError, convert_to_safetensors


def _convert(args: argparse.Namespace) -> int:
    destination = convert_to_safetensors(args.source, args.destination)
    print(f"wrote {destination}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_codeformer", description="CodeFormer face restoration.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="convert a .pth checkpoint to .safetensors",
        description="Check a CodeFormer checkpoint (without running any code in it) and write its tensors as .safetensors.",
    )
    convert.add_argument("source", help="checkpoint to read (.pth, .ckpt or .safetensors)")
    convert.add_argument("destination", help="file to write (.safetensors)")
    convert.set_defaults(run=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
