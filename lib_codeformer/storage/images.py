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

Encoding and decoding work on bytes, so any storage (local files, object
storage) can use them; ``read_image``/``write_image`` add local files, each
written to a temporary name in the target folder and renamed when complete.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Protocol

import cv2
import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from .atomic import atomic_write_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# Formats read here; anything else (ICO, which can wrap a PNG larger than its header says, for one) is refused.
# JPEG covers MPO (phones' multi-picture JPEGs); an animated GIF or WebP gives its first frame, with a note.
READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
ORIENTATION = 0x0112
JPEG_QUALITY = 95
# Decoded by OpenCV, into the pipeline's array directly (CMYK JPEGs excepted, for their colour profile).
_OPENCV_DECODES = ("PNG", "JPEG", "WEBP", "BMP")
# TIFF tags carried from input to output (besides resolution, the ICC profile and orientation). A TIFF's other
# tags describe its own layout (strip offsets, sizes...) and must not be copied into a new file.
_TIFF_TAGS = {270: "description", 271: "make", 272: "model", 305: "software", 306: "datetime", 315: "artist", 33432: "copyright"}


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


def decode_image(data: bytes, max_pixels: int | None = None) -> LoadedImage:
    """Decode image bytes: upright pixels, the format to write back, and the metadata to keep."""
    try:
        with Image.open(io.BytesIO(data), formats=READABLE_FORMATS) as opened:
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
    image_format = "JPEG" if opened.format == "MPO" else opened.format  # a phone's MPO is a JPEG with extra frames
    metadata, notes = _metadata(opened, image_format, data)
    frames = getattr(opened, "n_frames", 1)
    if frames > 1 and opened.format != "MPO":
        notes.append(f"animated image: only the first of its {frames} frames was restored")
    orientation = metadata.pop("orientation", 1)
    if image_format == "TIFF":  # libtiff, and some Pillow versions, turn TIFFs by their orientation themselves
        data = _tiff_without_orientation(data)
    if opened.mode == "CMYK":
        pixels = np.array(_cmyk_to_rgb(opened, metadata, notes))
    elif _sixteen_bit(opened, data) or image_format in _OPENCV_DECODES:
        pixels = _decode_with_opencv(data)  # straight into one array: Pillow's decode plus a copy would be two
    else:  # 8-bit TIFF (OpenCV would premultiply an unassociated alpha) and GIF
        with Image.open(io.BytesIO(data), formats=[opened.format]) as stored:
            pixels = _pillow_array(stored)
    pixels = apply_orientation(pixels, orientation)
    if orientation != 1:
        notes.append(f"turned upright by its EXIF orientation ({orientation})")
    return LoadedImage(np.ascontiguousarray(pixels), image_format, metadata, notes)


def _pillow_array(image: Image.Image) -> np.ndarray:
    """8-bit pixels as the pipeline takes them: gray, RGB and RGBA as they are; palettes and gray+alpha expanded."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.array(image)


def _sixteen_bit(image: Image.Image, data: bytes) -> bool:
    """16 bits per sample, which Pillow would reduce to 8 for colour images (OpenCV reads them)."""
    if image.format == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if image.format == "TIFF":
        return 16 in tuple(getattr(image, "tag_v2", {}).get(258, ()) or ())
    return image.mode.startswith("I;16") or image.mode == "I"


def _tiff_without_orientation(data: bytes) -> bytes:
    """The TIFF with its orientation tag set to 1: libtiff (under OpenCV) would turn the pixels itself, and only
    for some files, so the orientation is applied here, once, as for every other format."""
    if data[:4] not in (b"II*\0", b"MM\0*"):
        return data  # BigTIFF and anything else: as it is
    order = "<" if data[:2] == b"II" else ">"
    patched = bytearray(data)
    (directory,) = struct.unpack_from(order + "I", data, 4)
    if directory + 2 > len(data):
        return data
    (entries,) = struct.unpack_from(order + "H", data, directory)
    for index in range(entries):
        entry = directory + 2 + 12 * index
        if entry + 12 > len(data):
            break
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag == 274 and kind == 3:
            struct.pack_into(order + "H", patched, entry + 8, 1)
    return bytes(patched)


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


def _metadata(image: Image.Image, image_format: str, data: bytes) -> tuple[dict, list[str]]:
    """What to write back, and the orientation to apply. A broken block is dropped with a note, never fatal."""
    metadata: dict = {}
    notes: list[str] = []
    if image.info.get("icc_profile"):
        metadata["icc_profile"] = image.info["icc_profile"]
    if image.info.get("dpi"):
        metadata["dpi"] = image.info["dpi"]
    if image_format == "PNG":
        text = {k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}
        if text:
            metadata["text"] = text
    if image_format == "WEBP":
        metadata["lossless"] = _webp_is_lossless(data)
    if image_format == "JPEG":
        from PIL import JpegImagePlugin

        # The input's chroma subsampling (4:4:4, 4:2:2, 4:2:0), so colour detail is not halved on the way out;
        # a CMYK input has none that applies to RGB: 4:4:4.
        sampling = JpegImagePlugin.get_sampling(image) if image.mode != "CMYK" else 0
        metadata["subsampling"] = sampling if sampling in (0, 1, 2) else 0
    if image_format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        metadata["tiff_tags"] = {tag: tags[tag] for tag in _TIFF_TAGS if tag in tags and isinstance(tags[tag], str)}
        metadata["orientation"] = int(tags.get(274, 1) or 1)
        if not metadata["tiff_tags"]:
            del metadata["tiff_tags"]
        return metadata, notes  # its EXIF-like tags are the TIFF's own directory: kept above, tag by tag
    try:
        exif = image.getexif()
    except Exception as error:  # Pillow raises all kinds on damaged EXIF; the image itself is fine
        notes.append(f"its EXIF block could not be read and was dropped ({error})")
        return metadata, notes
    if exif:
        metadata.setdefault("orientation", int(exif.get(ORIENTATION, 1) or 1))
        exif[ORIENTATION] = 1  # the pixels are written upright
        metadata["exif"] = exif.tobytes()
    return metadata, notes


def _webp_is_lossless(data: bytes) -> bool:
    """A WebP whose image chunk is VP8L (lossless); in an extended (VP8X) file, the first image chunk decides."""
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        if chunk in (b"VP8 ", b"VP8L"):
            return chunk == b"VP8L"
        if chunk == b"ANMF" and position + 24 <= len(data):
            position += 24  # an animation frame: its own image chunk follows its 16-byte header
            continue
        position += 8 + size + (size & 1)
    return False


def check_writable(loaded: LoadedImage) -> None:
    """ImageFileError when a result could not be written in the input's format (checked before any work)."""
    Image.init()
    if loaded.format == "GIF":  # a still GIF; animated ones are restored as videos
        raise ImageFileError("a GIF holds 256 colours, too few for a restored face: convert it to PNG first")
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
    image = Image.fromarray(pixels)
    metadata = like.metadata
    options: dict = {}
    if "icc_profile" in metadata:
        options["icc_profile"] = metadata["icc_profile"]
    if "dpi" in metadata:
        options["dpi"] = metadata["dpi"]
    if "exif" in metadata and like.format in ("JPEG", "WEBP", "PNG"):
        options["exif"] = metadata["exif"]
    if like.format == "PNG" and "text" in metadata:
        options["pnginfo"] = _png_info(metadata["text"])
    elif like.format == "JPEG":
        options["quality"] = JPEG_QUALITY
        if "subsampling" in metadata:
            options["subsampling"] = metadata["subsampling"]
        if image.mode == "RGBA":
            image = image.convert("RGB")
    elif like.format == "WEBP":
        options.update({"lossless": True, "quality": 100, "method": 6} if metadata.get("lossless") else {"quality": 95})
    elif like.format == "TIFF":
        options["compression"] = "tiff_lzw"
        if "tiff_tags" in metadata:
            options["tiffinfo"] = dict(metadata["tiff_tags"])
    buffer = io.BytesIO()
    image.save(buffer, format=like.format, **options)
    return buffer.getvalue()


def _png_info(text: dict[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


def _encode_sixteen_bit(pixels: np.ndarray, like: LoadedImage) -> bytes:
    if like.format == "TIFF":
        return _encode_tiff_sixteen_bit(pixels, like.metadata)
    bgr = pixels
    if pixels.ndim == 3:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError("OpenCV could not encode the 16-bit result")
    return png_with_metadata(encoded.tobytes(), like.metadata)


def _encode_tiff_sixteen_bit(pixels: np.ndarray, metadata: dict) -> bytes:
    """tifffile keeps 16-bit colour and the TIFF tags (Pillow cannot write 16-bit colour TIFF); deflate is lossless."""
    import tifffile

    tags = metadata.get("tiff_tags", {})
    own = {270, 305, 306}  # written by tifffile's own arguments
    extratags = [(tag, "s", 0, value, True) for tag, value in tags.items() if tag not in own]
    if metadata.get("icc_profile"):  # tag 34675 (InterColorProfile), UNDEFINED bytes: every tifffile version writes it
        extratags.append((34675, 7, len(metadata["icc_profile"]), metadata["icc_profile"], True))
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        pixels,
        photometric="minisblack" if pixels.ndim == 2 else "rgb",
        extrasamples=("unassalpha",) if pixels.ndim == 3 and pixels.shape[2] == 4 else None,
        compression="zlib",
        description=tags.get(270),
        software=tags.get(305, ""),
        datetime=tags.get(306),
        metadata=None,
        resolution=metadata.get("dpi"),
        extratags=extratags,
    )
    return buffer.getvalue()


def png_with_metadata(png: bytes, metadata: dict) -> bytes:
    """A PNG stream with the ICC profile, EXIF and text chunks added after its header (OpenCV writes none)."""
    chunks = []
    if metadata.get("icc_profile"):
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(metadata["icc_profile"])))
    if metadata.get("exif"):
        exif = metadata["exif"]
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    for key, value in metadata.get("text", {}).items():
        keyword = key.encode("latin-1", "replace")[:79]
        try:
            chunks.append(_png_chunk(b"tEXt", keyword + b"\0" + value.encode("latin-1")))
        except UnicodeEncodeError:
            chunks.append(_png_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8")))
    header_end = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    return png[:header_end] + b"".join(chunks) + png[header_end:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
