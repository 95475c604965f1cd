"""TIFF: its own tags kept tag by tag, its orientation applied once, 16 bits kept (tifffile), written losslessly."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .base import ImageFormat

ORIENTATION_TAG = 274
# Tags carried from input to output (besides resolution, the ICC profile and orientation). A TIFF's other
# tags describe its own layout (strip offsets, sizes...) and must not be copied into a new file.
CARRIED_TAGS = {
    270: "description",
    271: "make",
    272: "model",
    305: "software",
    306: "datetime",
    315: "artist",
    33432: "copyright",
}


@dataclass(frozen=True)
class TiffFormat(ImageFormat):
    def read_metadata(self, image: Image.Image, data: bytes) -> tuple[dict[str, Any], list[str]]:
        """Its EXIF-like tags are the TIFF's own directory: kept tag by tag (no EXIF block is written)."""
        metadata: dict[str, Any] = {}
        if image.info.get("icc_profile"):
            metadata["icc_profile"] = image.info["icc_profile"]
        if image.info.get("dpi"):
            metadata["dpi"] = image.info["dpi"]
        tags = getattr(image, "tag_v2", {})
        carried = {tag: tags[tag] for tag in CARRIED_TAGS if tag in tags and isinstance(tags[tag], str)}
        if carried:
            metadata["tiff_tags"] = carried
        metadata["orientation"] = int(tags.get(ORIENTATION_TAG, 1) or 1)
        return metadata, []

    def for_decoding(self, data: bytes) -> bytes:
        """The TIFF with its orientation tag set to 1: libtiff (under OpenCV) would turn the pixels itself, and only
        for some files, so the orientation is applied by the caller, once, as for every other format."""
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
            if tag == ORIENTATION_TAG and kind == 3:
                struct.pack_into(order + "H", patched, entry + 8, 1)
        return bytes(patched)

    def is_sixteen_bit(self, image: Image.Image, data: bytes) -> bool:
        return 16 in tuple(getattr(image, "tag_v2", {}).get(258, ()) or ())

    def save_options(self, image: Image.Image, metadata: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        image, options = super().save_options(image, metadata)
        options["compression"] = "tiff_lzw"
        if "tiff_tags" in metadata:
            options["tiffinfo"] = dict(metadata["tiff_tags"])
        return image, options

    def encode_sixteen_bit(self, pixels: np.ndarray, metadata: dict[str, Any]) -> bytes:
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


# 8-bit TIFFs are decoded by Pillow: OpenCV would premultiply an unassociated alpha.
TIFF = TiffFormat("TIFF")
