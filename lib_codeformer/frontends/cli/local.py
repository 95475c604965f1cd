"""A restore run on this machine: images read and written in threads beside the network, videos streamed.

Every decision about names, clashes and what is never overwritten is
``batch``'s, shared with the Ray run.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ...errors import WeightsError
from .config import RunConfig, UsageError, VideoSettings


def restore_here(config: RunConfig) -> int:
    """The run on this machine; its exit status (UsageError for status 2)."""
    from ...batch import Job, OutputClash, check_no_clashes
    from ...restorer import FaceRestorer
    from ...storage.atomic import remove_stale
    from ...storage.images import IMAGE_SUFFIXES, iter_inputs
    from ...storage.model_files import COMMAND_LINE_ADVICE
    from ...video.containers import VIDEO_SUFFIXES, is_video_file
    from .video import video_target

    uris = [location for location in [*config.inputs, config.output] if "://" in location]
    if uris:
        raise UsageError(f"{uris[0]}: object storage is read and written on a Ray cluster (--ray); this reads local files")
    missing = [path for path in config.inputs if not Path(path).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    settings = config.restorer
    try:
        restorer = FaceRestorer(
            settings.weights,
            detector=settings.detector,
            device=settings.device,
            batch_size=settings.batch_size,
            precision=settings.precision,
            fast_conv=settings.fast_conv,
            weights_advice=COMMAND_LINE_ADVICE,
        )
        restorer.face_upscaler = _upscaler(settings.face_upscaler, restorer.device, "--face-upscaler")
        whole = _upscaler(config.upscaler or "lanczos", restorer.device, "--upscaler") if config.upscale > 1 else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    output_dir = Path(config.output).resolve()
    jobs = []
    found = list(iter_inputs(config.inputs, config.recursive, exclude=output_dir, suffixes=IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    for source, relative in found:
        video = is_video_file(source)
        jobs.append(Job(source, video_target(relative, config.video) if video else relative, video))
    try:
        check_no_clashes(jobs, str(output_dir))
    except OutputClash as error:
        raise UsageError(str(error)) from None
    if not jobs:
        _say_why_nothing_was_found(config, output_dir)
    for leftover in remove_stale(output_dir):
        print(f"removed {leftover}, left by an interrupted run", file=sys.stderr)
    run = _Run(restorer, config, output_dir, whole)
    with _terminate_as_interrupt():
        try:
            run.all(jobs)
        except KeyboardInterrupt:
            run.summary()
            print("interrupted; finished images are kept, --skip-existing resumes", file=sys.stderr)
            return 130
    run.summary()
    return 1 if run.failures else 0


def _upscaler(spec: str | None, device, flag: str):
    """The upscaler a flag names, loaded before any work (UpscalerError: a usage error naming the flag)."""
    if spec is None:
        return None
    from ...upscaling import UpscalerError, load_upscaler

    try:
        return load_upscaler(spec, device)
    except UpscalerError as error:
        raise UsageError(f"{flag}: {error}") from None


def _say_why_nothing_was_found(config: RunConfig, output_dir: Path) -> None:
    """No input file: say why. The output folder given as the input is a usage error; an empty folder is not
    (a folder watched by a script may be empty), but is said, with the hint to --recursive where it applies."""
    from ...storage.images import IMAGE_SUFFIXES
    from ...video.containers import VIDEO_SUFFIXES

    folders = [Path(given).resolve() for given in config.inputs if Path(given).is_dir()]
    if any(folder == output_dir or output_dir in folder.parents for folder in folders):
        raise UsageError(
            f"--output {config.output} is the input folder (or inside it), and results are never read as inputs: "
            "choose another --output folder"
        )
    nested = any(next(folder.glob("*/**/*"), None) is not None for folder in folders)
    hint = "; its subfolders are read with --recursive" if nested and not config.recursive else ""
    suffixes = " ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    print(f"no image or video found in {', '.join(config.inputs)} (files read: {suffixes}){hint}", file=sys.stderr)


class _Run:
    """One restore command's work: images read and written in threads beside the network, videos streamed, counts."""

    def __init__(self, restorer, config: RunConfig, output_dir: Path, whole_upscaler=None) -> None:
        self.restorer, self.config, self.output_dir = restorer, config, output_dir
        self.whole_upscaler = whole_upscaler
        self.options = config.options
        self.video_settings: VideoSettings = config.video
        self.counts = {"images": 0, "faces": 0, "skipped": 0, "failed": 0}
        self.videos = None

    def all(self, jobs: list) -> None:
        from tqdm import tqdm

        from ...batch import admit
        from .video import restore_videos

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
                skip_existing=self.config.skip_existing,
                overwrite=self.config.overwrite,
            ):
                (videos if job.video else images).append((job.source, target))
        if images:
            with tqdm(total=len(images), unit="image", disable=self.config.quiet, file=sys.stderr) as bar:
                self._images(images, bar)
        if videos:
            options = {key: value for key, value in self.options.items() if key != "aligned"}  # videos are never aligned faces
            self.videos = restore_videos(self.restorer, videos, self.video_settings, options, quiet=self.config.quiet)

    def failed(self, message: str) -> None:
        from tqdm import tqdm

        self.counts["failed"] += 1
        tqdm.write(f"failed: {message}", file=sys.stderr)

    def _images(self, work: list[tuple[Path, Path]], bar) -> None:
        """Read ahead and write behind in --jobs threads; the network runs here. A result counts once it is on disk."""
        from tqdm import tqdm

        from ...storage.images import check_writable, read_image, write_image

        jobs, started = self.config.jobs, time.perf_counter()
        restored = 0  # faces restored so far, for the bar (the counts wait for each file to be on disk)
        pool = ThreadPoolExecutor(max_workers=jobs)
        writes = []
        try:
            reads = [pool.submit(read_image, source, self.config.max_pixels) for source, _ in work[:jobs]]
            for index, (source, target) in enumerate(work):
                if index + jobs < len(work):
                    reads.append(pool.submit(read_image, work[index + jobs][0], self.config.max_pixels))
                try:
                    loaded = reads[index].result()
                    reads[index] = None  # let the decoded input go once restored
                    self._enlarge(loaded)
                    for note in loaded.notes:  # what could not be kept as it was (pages, frames), and what was done
                        tqdm.write(f"note: {source}: {note}", file=sys.stderr)
                    check_writable(loaded)
                    result = self.restorer.restore(loaded.pixels, **self.options)
                    self._say_what_changed(source, result)
                except WeightsError:
                    raise
                except Exception as error:  # one bad image must not end the batch
                    self.failed(str(error) if str(error).startswith(str(source)) else f"{source}: {error}")
                    bar.update()
                    continue
                writes.append((source, target, pool.submit(write_image, target, result.image, loaded), result.restored_count))
                restored += result.restored_count
                bar.set_postfix(faces=restored, faces_per_s=f"{restored / (time.perf_counter() - started):.2f}", refresh=False)
                bar.update()
                self._collect(writes, wait=False)
            self._collect(writes, wait=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # writes under way finish (whole files), queued reads are dropped

    def _say_what_changed(self, source: Path, result) -> None:
        """Faces a face upscaler enlarged (or could not), a line each image."""
        from tqdm import tqdm

        enlarged = sum(face.enlarged for face in result.faces)
        if enlarged:
            name = self.restorer.face_upscaler.name
            tqdm.write(f"note: {source}: {enlarged} face{'s' if enlarged > 1 else ''} enlarged with {name}", file=sys.stderr)
        for note in sorted({face.note for face in result.faces if face.note}):
            tqdm.write(f"note: {source}: {note}", file=sys.stderr)

    def _enlarge(self, loaded) -> None:
        """--upscale: the image enlarged before its faces are restored, where the result fits --max-pixels."""
        if self.whole_upscaler is None:
            return
        from ...upscaling import upscale_image

        scale = self.config.upscale
        height, width = loaded.pixels.shape[:2]
        pixels = round(height * scale) * round(width * scale)
        if pixels > self.config.max_pixels:
            loaded.notes.append(
                f"not enlarged: {scale:g} times would be {pixels} pixels, over --max-pixels {self.config.max_pixels}; "
                "restored at its own size"
            )
            return
        loaded.pixels = upscale_image(loaded.pixels, self.whole_upscaler, scale)
        loaded.notes.append(f"enlarged {scale:g} times with {self.whole_upscaler.name}")

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
        from ...batch import summary_line
        from .video import summary_line as video_summary_line

        print(summary_line(self.counts, self.output_dir))
        if self.videos is not None:
            print(video_summary_line(self.videos))


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
