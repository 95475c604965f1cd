"""Command line: ``python -m lib_codeformer COMMAND ...``.

Exit status: 0 success, 1 some work failed, 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import WeightsError
from ..network.weights import convert_to_safetensors

USAGE_ERROR = 2


def _convert(args: argparse.Namespace) -> int:
    destination = convert_to_safetensors(args.source, args.destination)
    print(f"wrote {destination}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..options import RestoreOptions
    from ..restorer import FaceRestorer
    from ..storage.images import ImageFileError, iter_inputs, read_image, write_image

    missing = [path for path in args.inputs if not Path(path).exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return USAGE_ERROR
    output_dir = Path(args.output).resolve()
    options = {
        "fidelity": args.fidelity,
        "confidence": args.confidence,
        "min_face_size": args.min_face_size,
        "max_face_size": args.max_face_size,
        "faces": args.faces,
        "max_faces": args.max_faces,
        "blend": args.blend,
        "mask": args.mask,
        "color_correction": args.color_correction,
        "keep_grayscale": not args.no_keep_grayscale,
        "aligned": args.aligned,
    }
    try:
        RestoreOptions.checked(**options)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1 (got {args.jobs})")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    restorer = FaceRestorer(
        args.weights,
        detector=args.detector,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        fast_conv=not args.no_fast_conv,
    )
    jobs = list(iter_inputs(args.inputs, args.recursive))
    inputs = {source.resolve() for source, _ in jobs}
    counts = {"images": 0, "faces": 0, "skipped": 0, "failed": 0}
    work: list[tuple[Path, Path]] = []
    for source, relative in jobs:
        target = (output_dir / relative).resolve()
        problem = _refuse_target(target, output_dir, inputs, args)
        if problem == "skip":
            counts["skipped"] += 1
        elif problem:
            counts["failed"] += 1
            print(f"failed: {source}: {problem}", file=sys.stderr)
        else:
            work.append((source, target))

    def failed(message: str) -> None:
        counts["failed"] += 1
        tqdm.write(f"failed: {message}", file=sys.stderr)

    started = time.perf_counter()
    # Reading the next images and writing finished ones run in --jobs threads, beside the network.
    with (
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
        tqdm(total=len(work), unit="image", disable=args.quiet, file=sys.stderr) as bar,
    ):
        reads = [pool.submit(read_image, source, args.max_pixels) for source, _ in work[: args.jobs]]
        writes = []
        for index, (source, target) in enumerate(work):
            if index + args.jobs < len(work):
                reads.append(pool.submit(read_image, work[index + args.jobs][0], args.max_pixels))
            try:
                loaded = reads[index].result()
                result = restorer.restore(loaded.pixels, **options)
            except WeightsError:
                raise
            except Exception as error:  # one bad image must not end the batch
                failed(str(error) if isinstance(error, ImageFileError) else f"{source}: {error}")
                bar.update()
                continue
            reads[index] = None  # let the decoded input go
            writes.append((source, pool.submit(write_image, target, result.image, loaded)))
            counts["faces"] += result.restored_count
            bar.update()
            bar.set_postfix(faces=counts["faces"], faces_per_s=f"{counts['faces'] / (time.perf_counter() - started):.2f}")
        for source, write in writes:
            try:
                write.result()
                counts["images"] += 1
            except OSError as error:
                failed(f"{source}: could not write the result ({error})")
    print(
        f"{counts['images']} images written, {counts['faces']} faces restored, "
        f"{counts['skipped']} skipped, {counts['failed']} failed -> {output_dir}"
    )
    return 1 if counts["failed"] else 0


def _refuse_target(target: Path, output_dir: Path, inputs: set[Path], args: argparse.Namespace) -> str | None:
    """Why ``target`` must not be written ("skip" to pass over it quietly), or None."""
    if output_dir != target and output_dir not in target.parents:
        return f"output {target} would be outside {output_dir}"
    if target in inputs:
        return f"output {target} is an input file; choose another --output folder"
    if target.exists():
        if args.skip_existing:
            return "skip"
        if not args.overwrite:
            return f"{target} exists (--skip-existing to keep it, --overwrite to replace it)"
    return None


def _add_restore_parser(commands) -> None:
    from ..network.inference import PRECISIONS
    from ..options import DEFAULT_MAX_PIXELS, DETECTORS, FACE_SELECTIONS, MASKS, default

    restore = commands.add_parser(
        "restore",
        help="restore the faces in image files and folders",
        description="Find the faces in each image, restore them with CodeFormer and write the result under --output, "
        "keeping relative paths, format and metadata. Input files are never modified.",
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and folders")
    restore.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the results")
    restore.add_argument(
        "--fidelity",
        "-w",
        type=float,
        default=default("fidelity"),
        help="0 = best quality, 1 = most faithful (default %(default)s)",
    )
    restore.add_argument("--detector", choices=DETECTORS, default=default("detector"), help="face detector")
    restore.add_argument("--weights", metavar="PATH", help="CodeFormer weights (.pth or .safetensors); default: find or download")
    restore.add_argument("--recursive", "-r", action="store_true", help="also images in subfolders of folder inputs")
    restore.add_argument("--skip-existing", action="store_true", help="leave results that already exist (resume a run)")
    restore.add_argument("--overwrite", action="store_true", help="replace results that already exist")
    restore.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    restore.add_argument(
        "--confidence", type=float, default=default("confidence"), help="detection threshold 0..1 (default per detector)"
    )
    restore.add_argument("--min-face-size", type=int, default=default("min_face_size"), metavar="PX", help="ignore smaller faces")
    restore.add_argument("--max-face-size", type=int, default=default("max_face_size"), metavar="PX", help="ignore larger faces")
    restore.add_argument("--faces", choices=FACE_SELECTIONS, default=default("faces"), help="which faces to restore")
    restore.add_argument("--max-faces", type=int, default=default("max_faces"), metavar="N", help="at most N faces, the largest")
    restore.add_argument(
        "--blend", type=float, default=default("blend"), help="restored face strength 0..1 (default %(default)s)"
    )
    restore.add_argument(
        "--mask", choices=MASKS, default=default("mask"), help="paste-back mask (parsing needs ParseNet weights)"
    )
    restore.add_argument("--color-correction", action="store_true", help="keep the original face's colours")
    restore.add_argument("--no-keep-grayscale", action="store_true", help="allow colour in grayscale photos")
    restore.add_argument("--aligned", action="store_true", help="inputs are aligned 512 x 512 faces")
    restore.add_argument("--batch-size", type=int, default=None, help="faces per network call (default by device)")
    restore.add_argument("--precision", choices=PRECISIONS, default="fp32", help="network precision (default fp32)")
    restore.add_argument(
        "--no-fast-conv", action="store_true", help="PyTorch's convolutions only, not the compiled Winograd kernel (CPU)"
    )
    restore.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"refuse larger images (default {DEFAULT_MAX_PIXELS})"
    )
    restore.add_argument("--jobs", "-j", type=int, default=2, help="threads reading and writing files beside the network")
    restore.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    restore.set_defaults(run=_restore)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_codeformer", description="CodeFormer face restoration.")
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
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished images are kept, --skip-existing resumes", file=sys.stderr)
        return 130
