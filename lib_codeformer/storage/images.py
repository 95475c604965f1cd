"""Reading and writing image files for the command line, keeping depth, format and metadata.

PNG and TIFF pixels are read with OpenCV, which keeps 16 bits per channel
(Pillow reduces 16-bit RGB to 8 bits); other formats with Pillow. JPEG and
WebP are turned upright by their EXIF orientation, and written back upright.
Every file is written to a temporary name in the target folder and renamed
when complete, so an interrupted run never leaves a half-written image.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from .atomic import move_into_place

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
_OPENCV_FORMATS = {"PNG", "TIFF"}


class ImageFileError(ValueError):
    """A file that is not a readable image."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); uint8 or uint16
    format: str  # Pillow's format name: PNG, JPEG, WEBP, ...
    metadata: dict = field(default_factory=dict)  # what to write back: text chunks, exif, icc_profile


def iter_inputs(paths: Iterable[str | os.PathLike], recursive: bool) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to the output folder) for each image file named or inside a named folder."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for file in sorted(path.glob(pattern)):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    yield file, file.relative_to(path)
        else:
            yield path, Path(path.name)


def read_image(path: Path, max_pixels: int | None = None) -> LoadedImage:
    """Decode an image file; the pixel limit is checked from the header, before decoding."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageFileError(f"{path}: {width} x {height} pixels is over the limit of {max_pixels} (--max-pixels)")
            image_format = opened.format or ""
            metadata = _metadata(opened)
            if image_format in _OPENCV_FORMATS:
                pixels = _read_with_opencv(path)
            else:
                upright = ImageOps.exif_transpose(opened)
                pixels = pillow_pixels(upright)
    except ImageFileError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError, EOFError) as error:
        raise ImageFileError(f"{path}: not a readable image ({error})") from None
    return LoadedImage(pixels, image_format, metadata)


def _read_with_opencv(path: Path) -> np.ndarray:
    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("OpenCV could not decode it")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported sample type {pixels.dtype}")
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, code)
    return pixels


def pillow_pixels(image: Image.Image) -> np.ndarray:
    """8-bit pixels as the pipeline takes them: gray, RGB and RGBA as they are, any other mode as RGB,
    or RGBA where it has an alpha channel or a transparent colour."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.array(image)


def _metadata(image: Image.Image) -> dict:
    metadata = {}
    if image.info.get("icc_profile"):
        metadata["icc_profile"] = image.info["icc_profile"]
    if image.format == "PNG":
        text = {k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}
        if text:
            metadata["text"] = text
    exif = image.getexif()
    if exif:
        exif.pop(0x0112, None)  # orientation: pixels are written upright
        metadata["exif"] = exif.tobytes()
    return metadata


def write_image(path: Path, pixels: np.ndarray, like: LoadedImage) -> None:
    """Write ``pixels`` in the format of ``like`` (its metadata too), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        if pixels.dtype == np.uint16:
            _write_with_opencv(Path(temporary), pixels, path.suffix)
        else:
            _write_with_pillow(Path(temporary), pixels, like)
        move_into_place(Path(temporary), path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_with_opencv(path: Path, pixels: np.ndarray, suffix: str) -> None:
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(suffix if suffix.lower() in (".png", ".tif", ".tiff") else ".png", pixels)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    path.write_bytes(encoded.tobytes())


def _write_with_pillow(path: Path, pixels: np.ndarray, like: LoadedImage) -> None:
    image = Image.fromarray(pixels)
    options: dict = {}
    metadata = like.metadata
    if "icc_profile" in metadata:
        options["icc_profile"] = metadata["icc_profile"]
    image_format = like.format or "PNG"
    if image_format == "PNG":
        if "text" in metadata:
            info = PngImagePlugin.PngInfo()
            for key, value in metadata["text"].items():
                info.add_text(key, value)
            options["pnginfo"] = info
    elif image_format in ("JPEG", "WEBP"):
        options["quality"] = 95
        if image_format == "JPEG" and image.mode == "RGBA":
            image = image.convert("RGB")
    if "exif" in metadata and image_format in ("JPEG", "WEBP", "PNG", "TIFF"):
        options["exif"] = metadata["exif"]
    image.save(path, format=image_format, **options)
