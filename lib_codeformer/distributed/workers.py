"""What runs on the cluster: actors that load the models once and restore image files in batches.

Each file goes through ``batch.restore_encoded``, the same decode, restore
and encode as the local command line, one image per ``FaceRestorer.restore``
call as there: the faces of one image share the network's batches, never
faces of different images, so the bytes do not depend on how Ray groups the
files. On the CPU an actor runs as many threads as it holds cores; PyTorch's
convolutions split their sums by thread count, so the results equal the
local command's run with that many threads (``OMP_NUM_THREADS``) on the same
kind of CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch import restore_encoded
from ..errors import SetupError
from .cluster import SharedModels
from .locations import Stores


@dataclass(frozen=True)
class WorkerSettings:
    """How each actor builds its FaceRestorer and restores: the command line's options, per actor."""

    detector: str
    device: str
    threads: int
    batch_size: int | None = None
    precision: str = "fp32"
    fast_conv: bool = True
    max_pixels: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class _Worker:
    """Loads the models once, from the object store; restores one file's bytes at a time."""

    def __init__(self, models: SharedModels, settings: WorkerSettings) -> None:
        import ray
        import torch

        from ..restorer import FaceRestorer
        from ..storage.model_files import default_cache_dir

        if settings.device == "cpu":
            torch.set_num_threads(settings.threads)
        cache = default_cache_dir()
        _install_model_files(models.files, cache)
        state = {name: torch.from_numpy(array.copy()) for name, array in ray.get(models.weights).items()}
        self.restorer = FaceRestorer(
            state,
            detector=settings.detector,
            device=settings.device,
            batch_size=settings.batch_size,
            precision=settings.precision,
            fast_conv=settings.fast_conv,
            detector_model_dirs=[cache],
            download=False,
        )
        self.restorer.network  # noqa: B018  (loaded now, once: a broken actor fails at start, not on its first file)
        self.settings = settings
        self.node = ray.get_runtime_context().get_node_id()

    def restore(self, data: bytes) -> tuple[bytes | None, int, str | None]:
        """(the result's bytes, faces restored, None), or (None, 0, why this file failed)."""
        try:
            encoded, result = restore_encoded(self.restorer, data, dict(self.settings.options), self.settings.max_pixels)
        except SetupError:
            raise  # missing weights or packages: every file would fail the same way, so the run stops and says why
        except Exception as error:  # one bad image must not end the batch
            return None, 0, str(error)
        return encoded, result.restored_count, None


def _install_model_files(files: Mapping[str, Any], folder: Path) -> None:
    """Put the driver's detector/ParseNet files into this node's cache, where a local run would have them."""
    import ray

    from ..storage.atomic import atomic_write_bytes

    for name, reference in files.items():
        target = folder / name
        if not (target.is_file() and target.stat().st_size > 0):
            atomic_write_bytes(target, ray.get(reference))


class RestoreBytes(_Worker):
    """``restore_images``'s actor: a batch's image bytes in, the restored bytes out, with faces and errors."""

    def __init__(self, models: SharedModels, settings: WorkerSettings, column: str) -> None:
        super().__init__(models, settings)
        self.column = column

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        results = [self.restore(data) for data in batch[self.column].to_pylist()]
        batch = batch.drop_columns([self.column])
        batch = batch.append_column(self.column, pa.array([result[0] for result in results], pa.binary()))
        batch = batch.append_column("faces", pa.array([result[1] for result in results], pa.int32()))
        return batch.append_column("error", pa.array([result[2] for result in results], pa.string()))


class RestoreFiles(_Worker):
    """The command line's actor: reads each source, restores it, writes its target whole; one report row each.

    A task that Ray runs again (its node died before the result came back)
    may find its target already written by the first attempt: equal bytes
    count as written and are not written again; other bytes are never
    replaced without ``overwrite``.
    """

    def __init__(self, models: SharedModels, settings: WorkerSettings, stores: Stores, overwrite: bool, owner: int) -> None:
        super().__init__(models, settings)
        self.stores, self.overwrite, self.owner = stores, overwrite, owner

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        sources = batch["source"].to_pylist()
        files = zip(sources, batch["read"].to_pylist(), batch["target"].to_pylist(), strict=True)
        reports = [self._one(source, read, target) for source, read, target in files]
        return pa.table(
            {
                "source": sources,
                "status": [report[0] for report in reports],
                "faces": pa.array([report[1] for report in reports], pa.int32()),
                "message": [report[2] for report in reports],
                "node": [self.node] * len(reports),
            }
        )

    def _one(self, source: str, read: str, target: str) -> tuple[str, int, str]:
        """("written", faces, "") or ("failed", 0, the line the failure report prints); ``source`` is the input as
        the user gave it, ``read`` where this node reads it."""
        try:
            data = self.stores.read(read)
        except OSError as error:
            return "failed", 0, f"{source}: cannot be read ({error.strerror or error})"
        encoded, faces, problem = self.restore(data)
        if encoded is None:
            return "failed", 0, f"{source}: {problem}"
        try:
            if self.overwrite or not self.stores.exists(target):
                self.stores.write(target, encoded, self.owner)
            elif self.stores.read(target) != encoded:
                return "failed", 0, f"{source}: {target} was created by someone else during the run; --overwrite replaces it"
        except Exception as error:  # a full disk, a refused upload: reported, never a traceback
            return "failed", 0, f"{source}: could not write {target} ({error})"
        return "written", faces, ""
