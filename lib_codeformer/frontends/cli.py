"""Command line: ``python -m lib_codeformer COMMAND ...``.

Exit status: 0 success, 1 some work failed, 2 usage errors.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePath

from ..errors import WeightsError
from ..network.weights import convert_to_safetensors

USAGE_ERROR = 2


def _convert(args: argparse.Namespace) -> int:
    destination = convert_to_safetensors(args.source, args.destination)
    print(f"wrote {destination}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from ..batch import Job, OutputClash, check_no_clashes
    from ..restorer import FaceRestorer
    from ..storage.atomic import remove_stale
    from ..storage.images import IMAGE_SUFFIXES, iter_inputs
    from ..storage.model_files import COMMAND_LINE_ADVICE
    from ..video import cli as video_cli

    uris = [location for location in [*args.inputs, args.output] if "://" in location]
    if uris and args.ray is None:
        return _usage_error(f"{uris[0]}: object storage is read and written on a Ray cluster (--ray); this reads local files")
    missing = [path for path in args.inputs if "://" not in path and not Path(path).exists()]
    if missing:
        return _usage_error(f"no such file or folder: {', '.join(missing)}")
    try:
        options = _restore_options(args)
        if args.ray is not None:
            from ..distributed.command import restore_on_ray

            videos = [path for path in args.inputs if PurePath(path).suffix.lower() in video_cli.VIDEO_ONLY_SUFFIXES]
            if videos:
                return _usage_error(f"{videos[0]}: videos are restored on this machine, not on a Ray cluster; drop --ray")

            return restore_on_ray(args, options)
        video_settings = video_cli.settings_from_args(args)
        restorer = FaceRestorer(
            args.weights,
            detector=args.detector,
            device=args.device,
            batch_size=args.batch_size,
            precision=args.precision,
            fast_conv=not args.no_fast_conv,
            weights_advice=COMMAND_LINE_ADVICE,
        )
    except ValueError as error:
        return _usage_error(str(error))
    output_dir = Path(args.output).resolve()
    suffixes = IMAGE_SUFFIXES | video_cli.VIDEO_SUFFIXES
    jobs = []
    for source, relative in iter_inputs(args.inputs, args.recursive, exclude=output_dir, suffixes=suffixes):
        video = video_cli.is_video_file(source)
        jobs.append(Job(source, video_cli.video_target(relative, video_settings) if video else relative, video))
    try:
        check_no_clashes(jobs, str(output_dir))
    except OutputClash as error:
        return _usage_error(str(error))
    for leftover in remove_stale(output_dir):
        print(f"removed {leftover}, left by an interrupted run", file=sys.stderr)
    run = _Run(restorer, options, args, output_dir, video_settings)
    with _terminate_as_interrupt():
        try:
            run.all(jobs)
        except KeyboardInterrupt:
            run.summary()
            print("interrupted; finished images are kept, --skip-existing resumes", file=sys.stderr)
            return 130
    run.summary()
    return 1 if run.failures else 0


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _restore_options(args: argparse.Namespace) -> dict:
    """The restore options from the arguments, every one checked (ValueError naming each problem)."""
    from ..options import RestoreOptions

    problems = []
    if args.jobs < 1:
        problems.append(f"--jobs must be at least 1 (got {args.jobs})")
    if args.max_pixels < 1:
        problems.append(f"--max-pixels must be at least 1 (got {args.max_pixels})")
    if args.batch_size is not None and args.batch_size < 1:
        problems.append(f"--batch-size must be at least 1 (got {args.batch_size})")
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
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise ValueError("; ".join(problems))
    return options


class _Run:
    """One restore command's work: images read and written in threads beside the network, videos streamed, counts."""

    def __init__(self, restorer, options: dict, args: argparse.Namespace, output_dir: Path, video_settings) -> None:
        self.restorer, self.options, self.args, self.output_dir = restorer, options, args, output_dir
        self.video_settings = video_settings
        self.counts = {"images": 0, "faces": 0, "skipped": 0, "failed": 0}
        self.videos = None

    def all(self, jobs: list) -> None:
        from tqdm import tqdm

        from ..batch import admit
        from ..video import cli as video_cli

        inputs = {job.source.resolve() for job in jobs}
        images, videos = [], []
        for job in jobs:
            target = (self.output_dir / job.relative).resolve()
            if admit(
                self,
                job.source,
                target,
                output_root=self.output_dir,
                inputs=inputs,
                exists=target.exists(),
                skip_existing=self.args.skip_existing,
                overwrite=self.args.overwrite,
            ):
                (videos if job.video else images).append((job.source, target))
        if images:
            with tqdm(total=len(images), unit="image", disable=self.args.quiet, file=sys.stderr) as bar:
                self._images(images, bar)
        if videos:
            options = {key: value for key, value in self.options.items() if key != "aligned"}  # videos are never aligned faces
            self.videos = video_cli.restore_videos(self.restorer, videos, self.video_settings, options, quiet=self.args.quiet)

    def failed(self, message: str) -> None:
        from tqdm import tqdm

        self.counts["failed"] += 1
        tqdm.write(f"failed: {message}", file=sys.stderr)

    def _images(self, work: list[tuple[Path, Path]], bar) -> None:
        """Read ahead and write behind in --jobs threads; the network runs here. A result counts once it is on disk."""
        from ..storage.images import check_writable, read_image, write_image

        jobs, started = self.args.jobs, time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=jobs)
        writes = []
        try:
            reads = [pool.submit(read_image, source, self.args.max_pixels) for source, _ in work[:jobs]]
            for index, (source, target) in enumerate(work):
                if index + jobs < len(work):
                    reads.append(pool.submit(read_image, work[index + jobs][0], self.args.max_pixels))
                try:
                    loaded = reads[index].result()
                    reads[index] = None  # let the decoded input go once restored
                    check_writable(loaded)
                    result = self.restorer.restore(loaded.pixels, **self.options)
                except WeightsError:
                    raise
                except Exception as error:  # one bad image must not end the batch
                    self.failed(str(error) if str(error).startswith(str(source)) else f"{source}: {error}")
                    bar.update()
                    continue
                writes.append((source, target, pool.submit(write_image, target, result.image, loaded), result.restored_count))
                bar.update()
                self._collect(writes, wait=False)
                elapsed = time.perf_counter() - started
                bar.set_postfix(faces=self.counts["faces"], faces_per_s=f"{self.counts['faces'] / elapsed:.2f}")
            self._collect(writes, wait=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # writes under way finish (whole files), queued reads are dropped

    def _collect(self, writes: list, *, wait: bool) -> None:
        while writes and (wait or writes[0][2].done()):
            source, target, write, faces = writes.pop(0)
            try:
                write.result()
            except Exception as error:  # a full disk, a format that cannot hold the result: reported, never a traceback
                self.failed(f"{source}: could not write {target} ({error})")
                continue
            self.counts["images"] += 1
            self.counts["faces"] += faces

    @property
    def failures(self) -> int:
        return self.counts["failed"] + (self.videos.failed if self.videos is not None else 0)

    def summary(self) -> None:
        from ..batch import summary_line
        from ..video import cli as video_cli

        print(summary_line(self.counts, self.output_dir))
        if self.videos is not None:
            print(video_cli.summary_line(self.videos))


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager stopping the run) cleans up like Ctrl+C: no temporary file is left behind."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _add_restore_parser(commands) -> None:
    from ..network.inference import PRECISIONS
    from ..options import DEFAULT_MAX_PIXELS, DETECTORS, FACE_SELECTIONS, MASKS, default
    from ..video import cli as video_cli

    restore = commands.add_parser(
        "restore",
        help="restore the faces in image and video files and folders",
        description="Find the faces in each image or video, restore them with CodeFormer and write the result under "
        "--output, keeping relative paths, format and metadata. Input files are never modified.",
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="image and video files and folders")
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
    video_cli.add_arguments(restore)
    _add_ray_arguments(restore)
    restore.set_defaults(run=_restore)


def _add_ray_arguments(restore) -> None:
    ray = restore.add_argument_group("on a Ray cluster (the [ray] extra; see the README's \"Many machines\")")
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
    except MemoryError:
        print("error: out of memory; try a smaller --batch-size or --max-pixels", file=sys.stderr)
        return 1
