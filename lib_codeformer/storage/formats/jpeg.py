"""JPEG (and MPO, a phone's multi-picture JPEG): quality 95 with the input's chroma subsampling, EXIF kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image, JpegImagePlugin

from .base import ImageFormat

QUALITY = 95


@dataclass(frozen=True)
class JpegFormat(ImageFormat):
    def read_metadata(self, image: Image.Image, data: bytes) -> tuple[dict[str, Any], list[str]]:
        metadata, notes = super().read_metadata(image, data)
        # The input's chroma subsampling (4:4:4, 4:2:2, 4:2:0), so colour detail is not halved on the way out;
        # a CMYK input has none that applies to RGB: 4:4:4.
        sampling = JpegImagePlugin.get_sampling(image) if image.mode != "CMYK" else 0
        metadata["subsampling"] = sampling if sampling in (0, 1, 2) else 0
        return metadata, notes

    def save_options(self, image: Image.Image, metadata: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        image, options = super().save_options(image, metadata)
        if "exif" in metadata:
            options["exif"] = metadata["exif"]
        options["quality"] = QUALITY
        if "subsampling" in metadata:
            options["subsampling"] = metadata["subsampling"]
        return (image.convert("RGB") if image.mode == "RGBA" else image), options


JPEG = JpegFormat("JPEG", decoded_by_opencv=True)
