"""WebP: a lossless input stays lossless (VP8L), a lossy one is written at quality 95; EXIF kept."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .base import ImageFormat


@dataclass(frozen=True)
class WebpFormat(ImageFormat):
    def read_metadata(self, image: Image.Image, data: bytes) -> tuple[dict[str, Any], list[str]]:
        metadata, notes = super().read_metadata(image, data)
        metadata["lossless"] = is_lossless(data)
        return metadata, notes

    def save_options(self, image: Image.Image, metadata: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        image, options = super().save_options(image, metadata)
        if "exif" in metadata:
            options["exif"] = metadata["exif"]
        options.update({"lossless": True, "quality": 100, "method": 6} if metadata.get("lossless") else {"quality": 95})
        return image, options


def is_lossless(data: bytes) -> bool:
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


WEBP = WebpFormat("WEBP", decoded_by_opencv=True)
