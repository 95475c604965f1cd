"""PNG: text chunks (the WebUI's ``parameters``) kept, 16 bits per channel kept, written losslessly."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from .base import ImageFormat


@dataclass(frozen=True)
class PngFormat(ImageFormat):
    def read_metadata(self, image: Image.Image, data: bytes) -> tuple[dict[str, Any], list[str]]:
        metadata, notes = super().read_metadata(image, data)
        text = {key: value for key, value in getattr(image, "text", {}).items() if isinstance(value, str)}
        if text:
            metadata["text"] = text
        return metadata, notes

    def is_sixteen_bit(self, image: Image.Image, data: bytes) -> bool:
        return len(data) > 24 and data[24] == 16  # IHDR's bit depth

    def save_options(self, image: Image.Image, metadata: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        image, options = super().save_options(image, metadata)
        if "exif" in metadata:
            options["exif"] = metadata["exif"]
        if "text" in metadata:
            info = PngImagePlugin.PngInfo()
            for key, value in metadata["text"].items():
                info.add_text(key, value)
            options["pnginfo"] = info
        return image, options

    def encode_sixteen_bit(self, pixels: np.ndarray, metadata: dict[str, Any]) -> bytes:
        """OpenCV writes 16-bit colour PNG (Pillow cannot); the metadata chunks are added after its header."""
        bgr = pixels
        if pixels.ndim == 3:
            bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".png", bgr)
        if not ok:
            raise OSError("OpenCV could not encode the 16-bit result")
        return png_with_metadata(encoded.tobytes(), metadata)


def png_with_metadata(png: bytes, metadata: dict[str, Any]) -> bytes:
    """A PNG stream with the ICC profile, EXIF and text chunks added after its header (OpenCV writes none)."""
    chunks = []
    if metadata.get("icc_profile"):
        chunks.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(metadata["icc_profile"])))
    if metadata.get("exif"):
        exif = metadata["exif"]
        chunks.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    for key, value in metadata.get("text", {}).items():
        keyword = key.encode("latin-1", "replace")[:79]
        try:
            chunks.append(_chunk(b"tEXt", keyword + b"\0" + value.encode("latin-1")))
        except UnicodeEncodeError:
            chunks.append(_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8")))
    header_end = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    return png[:header_end] + b"".join(chunks) + png[header_end:]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


PNG = PngFormat("PNG", decoded_by_opencv=True)
