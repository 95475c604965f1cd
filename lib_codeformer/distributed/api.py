"""Face restoration as a step of your own Ray Data pipeline: read, restore, then your next step."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..network.weights import WeightsSource
from ..options import DEFAULT_DETECTOR, DEFAULT_MAX_PIXELS, RestoreOptions, default
from ..storage.model_files import WeightsAdvice
from .cluster import plan_actors, require_ray, share_models
from .workers import RestoreBytes, WorkerSettings

# Files per actor call: small enough that a retried call (its node died) redoes little, and memory stays at a few
# decoded images per actor; large enough that Ray's per-call overhead is small against seconds per face.
DEFAULT_FILES_PER_BATCH = 4


def restore_images(
    images: Any,
    *,
    weights: WeightsSource | None = None,
    detector: str = DEFAULT_DETECTOR,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str = "fp32",
    fast_conv: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    actors: int | None = None,
    cpus_per_actor: int | None = None,
    files_per_batch: int = DEFAULT_FILES_PER_BATCH,
    column: str = "bytes",
    **options: Any,
) -> Any:
    """A Ray Dataset of restored image files, computed lazily by a pool of actors.

    ``images``: a Dataset whose ``column`` holds image files' bytes (as
    ``ray.data.read_binary_files(..., include_paths=True)`` makes), or paths
    and URIs to read that way. Every row comes back with its other columns as
    they were, ``column`` replaced by the restored file's bytes (same format
    and metadata, as the command line writes; null where it failed),
    ``faces`` (how many were restored) and ``error`` (null, or why the file
    failed). ``options`` are ``FaceRestorer.restore``'s (``fidelity=0.7``...);
    the other arguments are the command line's (see ``FaceRestorer`` and the
    docs/ray.md). Connects to Ray (``ray.init()``) if this
    process is not connected yet.
    """
    ray = require_ray()
    RestoreOptions.checked(**options)
    if files_per_batch < 1:
        raise ValueError(f"files_per_batch must be at least 1 (got {files_per_batch})")
    if not ray.is_initialized():
        ray.init()
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, Sequence):
        images = ray.data.read_binary_files([os.fspath(path) for path in images], include_paths=True)
    plan = plan_actors(device, actors, cpus_per_actor)
    mask = options.get("mask", default("mask"))
    models = share_models(weights, detector=options.get("detector") or detector, mask=mask, advice=WeightsAdvice())
    settings = WorkerSettings(detector, plan.device, plan.cpus, batch_size, precision, fast_conv, max_pixels, options)
    return images.map_batches(
        RestoreBytes,
        fn_constructor_args=(models, settings, column),
        batch_size=files_per_batch,
        batch_format="pyarrow",
        **plan.map_batches_args(),
    )
