"""Finding model files on disk, and downloading them verified and atomically.

A file that is already present is used as it is, without any network
access. A download goes to a temporary file next to its target, is checked
against the published size and sha256, and only then renamed into place: an
interrupted, truncated or tampered transfer leaves nothing behind that a
later run could mistake for the real file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DownloadError, WeightsError
from .atomic import atomic_output, remove_stale

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "CODEFORMER_WEIGHTS"
CACHE_ENV = "CODEFORMER_CACHE"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """A published model file: where it comes from and how to recognise it."""

    filename: str
    url: str
    sha256: str | None  # None only where no hash is published; then the size is checked
    size: int | None = None
    # Other names the same file is stored under (AUTOMATIC1111 renames codeformer.pth).
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # Checks a downloaded file before it is renamed into place (raises with the reason); where no
    # sha256 is published it is what makes the download trustworthy.
    verify: Callable[[Path], None] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.filename, *self.aliases)


CODEFORMER = ModelFile(
    filename="codeformer.pth",
    url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
    sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
    size=376_637_898,
    aliases=("codeformer-v0.1.0.pth", "codeformer.safetensors"),
)


@dataclass(frozen=True)
class WeightsAdvice:
    """How the front end in use lets a user give the weights, worded into every "not found" message.

    ``explicit`` names where an explicit path came from; ``alternative``
    ends "put it at ..." with the other way to give it.
    """

    explicit: str = "the given weights path"
    alternative: str = f"or pass its path as FaceRestorer(weights=...) (or set ${WEIGHTS_ENV})"


COMMAND_LINE_ADVICE = WeightsAdvice("--weights", f"or pass its path with --weights PATH (or set ${WEIGHTS_ENV})")


def default_cache_dir() -> Path:
    """``$CODEFORMER_CACHE``, else the user's cache folder (``~/.cache/codeformer`` on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "codeformer"


def find_model_file(model: ModelFile, folders: Iterable[str | os.PathLike]) -> Path | None:
    """The first existing, non-empty file with one of the model's names in ``folders``."""
    for folder in folders:
        for name in model.names:
            candidate = Path(folder).expanduser() / name
            if candidate.is_file() and candidate.stat().st_size > 0:
                return candidate
    return None


def locate_weights(
    explicit: str | os.PathLike | None = None,
    *,
    model_dirs: Sequence[str | os.PathLike] = (),
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    model: ModelFile = CODEFORMER,
    progress: bool = True,
    advice: WeightsAdvice = WeightsAdvice(),
) -> Path:
    """Find the weights file, downloading it when it is nowhere on disk.

    Order: ``explicit``; ``$CODEFORMER_WEIGHTS``; each of ``model_dirs``
    (the WebUI's ``models/Codeformer``); the cache folder. When none has
    it, download ``model.url`` into the first of ``model_dirs`` (else the
    cache folder), verified against its sha256.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target_dir = Path(model_dirs[0]) if model_dirs else cache
    for given, what in ((explicit, advice.explicit), (os.environ.get(WEIGHTS_ENV), f"${WEIGHTS_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                what_it_is = "is a folder, not a file" if path.is_dir() else "does not exist"
                raise WeightsError(
                    f"CodeFormer weights: {what} ({path}) {what_it_is}. {manual_hint(model, target_dir, advice.alternative)}"
                )
            return path
    found = find_model_file(model, [*model_dirs, cache])
    if found is not None:
        return found
    if not download:
        searched = ", ".join(map(str, [*model_dirs, cache]))
        raise WeightsError(f"CodeFormer weights not found in {searched}. {manual_hint(model, target_dir, advice.alternative)}")
    return download_file(model, target_dir, progress=progress, alternative=advice.alternative)


def manual_hint(model: ModelFile, folder: Path, alternative: str = "") -> str:
    """Where to get the file by hand and where to put it (plus the front end's other way to give it)."""
    checksum = f" (sha256 {model.sha256})" if model.sha256 else ""
    other = f", {alternative}" if alternative else ""
    return f"Download {model.url}{checksum} by hand and put it at {folder / model.filename}{other}."


def download_file(
    model: ModelFile, target_dir: str | os.PathLike, *, progress: bool = True, timeout: float = 60.0, alternative: str = ""
) -> Path:
    """Download ``model`` into ``target_dir``; verify size, sha256 and ``model.verify``; rename into place only when right.

    A lock file next to the target makes processes that need the file at the
    same moment download it once: the others wait, then find it. Whoever holds
    the lock first deletes temporary files left by a crashed download.
    """
    from filelock import FileLock

    target_dir = Path(target_dir)
    target = target_dir / model.filename
    hint = manual_hint(model, target_dir, alternative)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target_dir / f".{model.filename}.lock")):
            if target.is_file() and target.stat().st_size > 0:
                return target  # another process finished it while this one waited
            remove_stale(target_dir, recursive=False)  # what a download killed mid-way left
            for legacy in target_dir.glob(f".{model.filename}.*.part"):  # 0.1.0's names; the lock says nobody writes
                legacy.unlink(missing_ok=True)
            return _download_locked(model, target, progress, timeout, hint)
    except OSError as error:
        raise DownloadError(f"Cannot write to {target_dir} ({error}). {hint}") from None


def _download_locked(model: ModelFile, target: Path, progress: bool, timeout: float, hint: str) -> Path:
    logger.info("Downloading %s to %s", model.url, target)
    with atomic_output(target) as partial:
        with open(partial, "wb") as out:
            digest, received = _fetch(model, out, progress, timeout, hint)
        if model.size is not None and received != model.size:
            raise DownloadError(f"Download of {model.url} stopped after {received} of {model.size} bytes. {hint}")
        if model.sha256 is not None and digest != model.sha256:
            raise DownloadError(
                f"Downloaded {model.url} but its sha256 is {digest}, not the published {model.sha256}: "
                f"the file was damaged or replaced, and was deleted. {hint}"
            )
        if model.verify is not None:
            try:
                model.verify(partial)
            except (WeightsError, ValueError, OSError) as error:
                message = f"Downloaded {model.url}, but it is not the expected file ({error}); it was deleted. {hint}"
                raise DownloadError(message) from None
    return target


# Where neither the model nor the server says how large a file is, no download may exceed this.
MAX_UNKNOWN_SIZE = 1 << 30


def _fetch(model: ModelFile, out, progress: bool, timeout: float, hint: str) -> tuple[str, int]:
    """Stream the file into ``out``; never more bytes than expected (the model's size, else the server's)."""
    digest = hashlib.sha256()
    received = 0
    request = urllib.request.Request(model.url, headers={"User-Agent": "sd-webui-codeformer"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            announced = int(response.headers.get("Content-Length") or 0) or None
            limit = model.size or announced or MAX_UNKNOWN_SIZE
            with _progress_bar(limit, model.filename, progress) as bar:
                while chunk := response.read(min(CHUNK, limit + 1 - received)):
                    received += len(chunk)
                    if received > limit:
                        raise DownloadError(f"Download of {model.url} sent more than the expected {limit} bytes; stopped. {hint}")
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(f"Could not download {model.url}: HTTP {error.code} {error.reason}. {hint}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"Could not download {model.url}: {reason}. {hint}") from None
    return digest.hexdigest(), received


def _progress_bar(total: int | None, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"Downloading {name}",
        disable=not enabled,
        file=sys.stderr,
    )
