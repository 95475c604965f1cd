"""Command line: ``codeformer COMMAND ...`` (or ``python -m lib_codeformer COMMAND ...``).

Exit status: 0 success, 1 some work failed, 2 usage errors.

- ``config``: the flags and the typed run configuration read from them;
- ``local``: a run on this machine (images read and written beside the network, videos streamed);
- ``video``: one video file, with a progress bar;
- ``ray``: the same run on a Ray cluster.

Building the parser imports neither torch nor the network: ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ... import options as option_specs
from ...errors import WeightsError
from ...version import __version__
from .config import DEFAULT_JOBS, UsageError, add_option_flags, read_config, with_flags

USAGE_ERROR = 2


def _restore(args: argparse.Namespace) -> int:
    config = read_config(args)
    if config.ray is not None:
        from .ray import restore_on_ray

        return restore_on_ray(config, config.ray)
    from .local import restore_here

    return restore_here(config)


def _convert(args: argparse.Namespace) -> int:
    from ...network.weights import convert_to_safetensors

    destination = convert_to_safetensors(args.source, args.destination)
    print(f"wrote {destination}")
    return 0


def _add_restore_parser(commands) -> None:
    restore = commands.add_parser(
        "restore",
        help="restore the faces in image and video files and folders",
        description="Find the faces in each image or video, restore them with CodeFormer and write the result under "
        "--output, keeping relative paths, format and metadata. Input files are never modified. "
        "Every option is described in docs/options.md.",
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="image and video files and folders")
    restore.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the results")
    add_option_flags(restore, option_specs.RESTORE)
    files = restore.add_argument_group("files")
    files.add_argument("--recursive", "-r", action="store_true", help="also images in subfolders of folder inputs")
    files.add_argument("--skip-existing", action="store_true", help="leave results that already exist (resume a run)")
    files.add_argument("--overwrite", action="store_true", help="replace results that already exist")
    files.add_argument(
        "--jobs", "-j", type=int, default=DEFAULT_JOBS, help="threads reading and writing files beside the network"
    )
    files.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_option_flags(restore, option_specs.RESTORER, "models, devices and limits")
    add_option_flags(
        restore,
        option_specs.VIDEO,
        "videos (.mp4 .mov .mkv .webm .avi, animated .gif/.webp; needs PyAV: pip install av)",
    )
    _add_ray_arguments(restore)
    restore.set_defaults(run=_restore)


def _add_ray_arguments(restore) -> None:
    ray = restore.add_argument_group("on a Ray cluster (the [ray] extra; see docs/ray.md)")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="restore on a Ray cluster: auto (the one `ray start` made here), HOST:PORT or ray://HOST:10001; "
        "INPUT and --output may then be s3://bucket/prefix or gs://bucket/prefix",
    )
    ray.add_argument("--ray-actors", type=int, metavar="N", help="restoring actors (default: one per GPU, else by CPUs)")
    ray.add_argument(
        "--ray-cpus-per-actor", type=int, metavar="N", help="CPU cores (threads) per actor (default: 4, or the smallest node's)"
    )
    ray.add_argument("--ray-files-per-batch", type=int, metavar="N", help="files per actor call (default 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeformer", description="CodeFormer face restoration.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_restore_parser(commands)
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
    except UsageError as error:
        print(f"error: {with_flags(str(error))}", file=sys.stderr)
        return USAGE_ERROR
    except WeightsError as error:
        print(f"error: {with_flags(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished images are kept, --skip-existing resumes", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; try a smaller --batch-size or --max-pixels", file=sys.stderr)
        return 1
