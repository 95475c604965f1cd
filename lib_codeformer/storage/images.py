"""Image files in and out, so that a result looks as its input looked wherever no face was restored.

Rules (each one is a test):

- Pixels come upright: the EXIF orientation (JPEG, PNG, TIFF, WebP) is
  applied on reading, and written back as 1, so viewers show the result as
  they showed the input.
- Depth is kept: 16-bit PNG and TIFF are read and written as 16 bits per
  channel (Pillow would reduce 16-bit colour to 8).
- Metadata is kept: PNG text chunks (the WebUI's ``parameters``), EXIF, ICC
  profile, TIFF description/software/resolution tags, also on 16-bit files.
- Lossless stays lossless: PNG, TIFF, BMP and lossless WebP are written
  losslessly; JPEG and lossy WebP at quality 95.
- CMYK JPEGs are converted to RGB through their ICC profile (to sRGB), and
  the CMYK profile, which would misdescribe RGB pixels, is not written.
- A format Pillow reads but cannot write (PSD, XPM, ...) is a reported
  failure before any work is done, never a traceback.

What each format does differently is its plugin's (``storage.formats``).

Encoding and decoding work on bytes, so any storage (local files, object
storage) can use them; ``read_image``/``write_image`` add local files, each
written to a temporary name in the target folder and renamed when complete.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Protocol

import cv2
import numpy as np
from PIL import Image, ImageCms

from .atomic import atomic_write_bytes
from .formats import PNG, format_of

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# Formats read here; anything else (ICO, which can wrap a PNG larger than its header says, for one) is refused.
# JPEG covers MPO (phones' multi-picture JPEGs); an animated GIF or WebP gives its first frame, with a note.
READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


class ImageFileError(ValueError):
    """A file that is not a readable image, or a result that cannot be written in the input's format."""


class ImageTooLarge(ImageFileError):
    """An image over the pixel limit (found from its header, before decoding)."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # upright; H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); uint8 or uint16
    format: str  # the format the result is written in (Pillow's name: PNG, JPEG, WEBP, TIFF, BMP)
    metadata: dict = field(default_factory=dict)  # text, exif, icc_profile, lossless, dpi, tiff_tags
    notes: list[str] = field(default_factory=list)  # what was done on reading, for the user


class FileTree(Protocol):
    """Where inputs are listed: local folders here, another storage's (object storage, for the Ray backend) there."""

    def path(self, given: str | os.PathLike) -> PurePath: ...

    def is_dir(self, path: PurePath) -> bool: ...

    def files(self, folder: PurePath, recursive: bool) -> Iterable[PurePath]:
        """Every file in ``folder`` (and its subfolders when ``recursive``), hidden ones included."""

    def resolve(self, path: PurePath) -> PurePath: ...


class LocalFiles:
    """The local file system, as the command line lists it."""

    def path(self, given: str | os.PathLike) -> Path:
        return Path(given)

    def is_dir(self, path: PurePath) -> bool:
        return Path(path).is_dir()

    def files(self, folder: PurePath, recursive: bool) -> Iterator[Path]:
        return (file for file in Path(folder).glob("**/*" if recursive else "*") if file.is_file())

    def resolve(self, path: PurePath) -> Path:
        return Path(path).resolve()


LOCAL_FILES = LocalFiles()


def iter_inputs(
    paths: Iterable[str | os.PathLike],
    recursive: bool,
    *,
    exclude: PurePath | None = None,
    suffixes: set[str] = IMAGE_SUFFIXES,
    tree: FileTree = LOCAL_FILES,
) -> Iterator[tuple[PurePath, PurePath]]:
    """(file, path relative to the output folder) for each file named or inside a named folder.

    Files inside ``exclude`` (the output folder) are never inputs: a re-run
    with the output folder inside an input folder must not restore its own
    results again. ``tree`` says where the paths are (local files unless
    given), so that every storage names its results by the same rules.
    """
    excluded = tree.resolve(exclude) if exclude is not None else None
    for given in paths:
        path = tree.path(given)
        if tree.is_dir(path):
            for file in sorted(tree.files(path, recursive)):
                if file.suffix.lower() not in suffixes or file.name.startswith("."):
                    continue
                if excluded is not None and excluded in tree.resolve(file).parents:
                    continue
                yield file, file.relative_to(path)
        else:
            yield path, type(path)(path.name)


def read_image(path: Path, max_pixels: int | None = None) -> LoadedImage:
    """Decode an image file; the pixel limit is checked from the header, before decoding."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        return decode_image(data, max_pixels)
    except ImageFileError as error:
        raise ImageFileError(f"{path}: {error}") from None


# Pillow refuses images above its own limit (a decompression-bomb guard, 178956970 pixels) before ours is
# asked; where a caller's limit is higher, it is raised to ours for that decode, under this lock.
_pillow_limit_lock = threading.Lock()


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    default = Image.MAX_IMAGE_PIXELS
    if max_pixels is None or default is None or max_pixels <= default:
        yield
        return
    with _pillow_limit_lock:
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # asked for: our limit is checked
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = default


def decode_image(data: bytes, max_pixels: int | None = None) -> LoadedImage:
    """Decode image bytes: upright pixels, the format to write back, and the metadata to keep.

    ``max_pixels`` is checked from the header, before any pixel is decoded;
    it replaces Pillow's own guard where it is higher (a user who raised it
    for a large scan gets it).
    """
    try:
        with _pillow_limit(max_pixels), Image.open(io.BytesIO(data), formats=READABLE_FORMATS) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(f"{width} x {height} pixels is over the limit of {max_pixels} pixels")
            return _decode_opened(opened, data)
    except ImageFileError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"too large to decode safely ({error})") from None
    except Image.UnidentifiedImageError:
        raise ImageFileError(f"not a readable image (formats read: {', '.join(READABLE_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, MemoryError) as error:
        raise ImageFileError(f"not a readable image ({error})") from None


def _decode_opened(opened: Image.Image, data: bytes) -> LoadedImage:
    plugin = format_of(opened.format)
    metadata, notes = plugin.read_metadata(opened, data)
    frames = getattr(opened, "n_frames", 1)
    if frames > 1 and opened.format != "MPO":
        if plugin.name == "TIFF":
            notes.append(f"a TIFF of {frames} pages: only the first page was restored (the result has that page alone)")
        else:
            notes.append(f"animated image: only the first of its {frames} frames was restored")
    orientation = metadata.pop("orientation", 1)
    data = plugin.for_decoding(data)
    if opened.mode == "CMYK":
        pixels = np.array(_cmyk_to_rgb(opened, metadata, notes))
    elif plugin.is_sixteen_bit(opened, data) or plugin.decoded_by_opencv:
        pixels = _decode_with_opencv(data)  # straight into one array: Pillow's decode plus a copy would be two
    else:
        with Image.open(io.BytesIO(data), formats=[opened.format]) as stored:
            pixels = _pillow_array(stored)
    pixels = apply_orientation(pixels, orientation)
    if orientation != 1:
        notes.append(f"turned upright by its EXIF orientation ({orientation})")
    return LoadedImage(np.ascontiguousarray(pixels), plugin.name, metadata, notes)


def _pillow_array(image: Image.Image) -> np.ndarray:
    """Pixels as the pipeline takes them: gray, RGB and RGBA as they are; palettes and gray+alpha expanded;
    32-bit and float samples as 16 bits where every value is a whole number in 0..65535 (else refused)."""
    if image.mode in ("I", "I;32", "F") or image.mode.startswith(("I;32", "I;16")):
        return _as_sixteen_bits(np.array(image))
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.array(image)


def _as_sixteen_bits(samples: np.ndarray) -> np.ndarray:
    """Wide samples as uint16, exactly; ImageFileError where that would change a value (nothing is clipped)."""
    if samples.dtype == np.uint16:
        return samples
    low, high = (samples.min(), samples.max()) if samples.size else (0, 0)
    integral = np.issubdtype(samples.dtype, np.integer)
    whole = integral or bool(np.all(np.isfinite(samples)) and np.all(samples == np.round(samples)))
    if not whole or low < 0 or high > 65535:
        raise ImageFileError(
            f"its {samples.dtype.itemsize * 8}-bit samples (from {low:g} to {high:g}) do not fit the 16 bits the restorer "
            "works in, and would be changed; convert it to a 16-bit image first"
        )
    return samples.astype(np.uint16)


def _decode_with_opencv(data: bytes) -> np.ndarray:
    # As stored: the orientation is applied here, the same way for every format (OpenCV turns some, not others).
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise ValueError("OpenCV could not decode it")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported sample type {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    elif pixels.ndim == 3 and pixels.shape[2] == 2:  # gray + alpha
        gray, alpha = pixels[:, :, 0], pixels[:, :, 1]
        pixels = np.dstack([gray, gray, gray, alpha])
    elif pixels.ndim == 3:
        cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB, dst=pixels)
    return pixels


def _cmyk_to_rgb(image: Image.Image, metadata: dict, notes: list[str]) -> Image.Image:
    """CMYK through its own ICC profile to sRGB where it has one (what a viewer shows); else Pillow's conversion."""
    profile = metadata.pop("icc_profile", None)
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            metadata["icc_profile"] = ImageCms.ImageCmsProfile(srgb).tobytes()
            notes.append("CMYK converted to RGB through its ICC profile (written with an sRGB profile)")
            return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    notes.append("CMYK converted to RGB")
    return image.convert("RGB")


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels the way a viewer shows them for an EXIF orientation (1-8; anything else is 1)."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def check_writable(loaded: LoadedImage) -> None:
    """ImageFileError when a result could not be written in the input's format (checked before any work)."""
    Image.init()
    if not format_of(loaded.format).writable:  # a still GIF; animated ones are restored as videos
        raise ImageFileError(f"a {loaded.format} holds 256 colours, too few for a restored face: convert it to PNG first")
    if loaded.format not in Image.SAVE:
        raise ImageFileError(
            f"{loaded.format} files can be read but not written here; convert the input to PNG or TIFF first"
        )


def encode_png(pixels: np.ndarray) -> bytes:
    """Any pipeline array as a PNG of its own depth (16-bit arrays as 16-bit PNG)."""
    return encode_image(pixels, LoadedImage(pixels, "PNG"))


def encode_image(pixels: np.ndarray, like: LoadedImage) -> bytes:
    """``pixels`` encoded in ``like``'s format with its metadata (see the module's rules)."""
    check_writable(like)
    if pixels.dtype == np.uint16:
        return _encode_sixteen_bit(pixels, like)
    return _encode_with_pillow(pixels, like)


def write_image(path: Path, pixels: np.ndarray, like: LoadedImage) -> None:
    """Write ``pixels`` in the format of ``like`` (its metadata too), atomically."""
    atomic_write_bytes(path, encode_image(pixels, like))


def _encode_with_pillow(pixels: np.ndarray, like: LoadedImage) -> bytes:
    image, options = format_of(like.format).save_options(Image.fromarray(pixels), like.metadata)
    buffer = io.BytesIO()
    image.save(buffer, format=like.format, **options)
    return buffer.getvalue()


def _encode_sixteen_bit(pixels: np.ndarray, like: LoadedImage) -> bytes:
    """16-bit results in the input's format where it holds 16 bits (TIFF), else as 16-bit PNG."""
    plugin = format_of(like.format)
    return (plugin if plugin.holds_sixteen_bits else PNG).encode_sixteen_bit(pixels, like.metadata)



