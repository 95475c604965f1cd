"""Restoring many files: which input goes to which output, and one file's bytes in and out.

Shared by the local command line and the Ray backend, so that both make the
same decisions (names, clashes, what is never overwritten) and write the
same bytes for the same input.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

from .restorer import FaceRestorer, RestoreResult
from .storage.images import check_writable, decode_image, encode_image


@dataclass(frozen=True)
class Job:
    """One input and where its result goes, relative to the output root."""

    source: Any  # a local Path, or a location string of another storage
    relative: PurePath  # the result's path under the output root
    video: bool = False  # restored as a video (streamed frame by frame), not as an image


class OutputClash(ValueError):
    """Two inputs would be written to the same output; the message names both."""


def check_no_clashes(jobs: Iterable[Job], output_root: str) -> None:
    """OutputClash naming the first two inputs whose results would share a path (compared as case-insensitive
    file systems compare it, so a run behaves the same on every system)."""
    seen: dict[str, Job] = {}
    for job in jobs:
        key = job.relative.as_posix().casefold()
        first = seen.setdefault(key, job)
        if first is not job:
            raise OutputClash(
                f"{first.source} and {job.source} would both be written to {output_root}/{job.relative.as_posix()}; "
                "restore them in separate runs (or to separate --output folders), or rename one"
            )


def refuse_target(
    target: PurePath,
    output_root: PurePath,
    inputs: Collection[PurePath],
    exists: bool,
    *,
    skip_existing: bool,
    overwrite: bool,
) -> str | None:
    """Why ``target`` must not be written ("skip" to pass over it quietly), or None.

    Paths are as the storage compares them (local ones resolved, symlinks
    included; object keys as they are), so one rule serves local folders and
    object storage: never outside the output root, never onto an input,
    never over an existing result unless asked.
    """
    if output_root != target and output_root not in target.parents:
        return f"output {target} would be outside {output_root}"
    if target in inputs:
        return f"output {target} is an input file; choose another --output folder"
    if exists:
        if skip_existing:
            return "skip"
        if not overwrite:
            return f"{target} exists (--skip-existing to keep it, --overwrite to replace it)"
    return None


class Tally(Protocol):
    """What a restore run counts (``counts``: images, faces, skipped, failed) and how it reports a failure."""

    counts: dict[str, int]

    def failed(self, message: str) -> None: ...


def admit(run: Tally, source: object, target: PurePath, **rule: Any) -> bool:
    """Whether ``target`` is to be written (``refuse_target(target, **rule)``); a skip is counted, a refusal reported."""
    problem = refuse_target(target, **rule)
    if problem == "skip":
        run.counts["skipped"] += 1
    elif problem:
        run.failed(f"{source}: {problem}")
    return problem is None


def summary_line(counts: Mapping[str, int], output_root: object) -> str:
    """The line that ends every restore run, local or on a cluster (scripts read it)."""
    return (
        f"{counts['images']} images written, {counts['faces']} faces restored, "
        f"{counts['skipped']} skipped, {counts['failed']} failed -> {output_root}"
    )


def restore_encoded(
    restorer: FaceRestorer, data: bytes, options: dict[str, Any], max_pixels: int | None
) -> tuple[bytes, RestoreResult]:
    """One image file's bytes to its result's bytes (same format and metadata), and what was done."""
    loaded = decode_image(data, max_pixels)
    check_writable(loaded)
    result = restorer.restore(loaded.pixels, **options)
    return encode_image(result.image, loaded), result
