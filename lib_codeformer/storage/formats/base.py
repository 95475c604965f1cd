"""What every format does unless its plugin says otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageFormat:
    """One format's quirks; the defaults are those of a format with an ICC profile, a resolution and EXIF.

    ``decoded_by_opencv``: OpenCV decodes it straight into one array (Pillow
    would decode and copy); ``writable``: a restored face can be written in it.
    """

    name: str
    decoded_by_opencv: bool = False
    writable: bool = True

    def read_metadata(self, image: Image.Image, data: bytes) -> tuple[dict[str, Any], list[str]]:
        """What to write back (and ``orientation``, to apply), and notes for the user; a broken block is dropped."""
        metadata: dict[str, Any] = {}
        notes: list[str] = []
        if image.info.get("icc_profile"):
            metadata["icc_profile"] = image.info["icc_profile"]
        if image.info.get("dpi"):
            metadata["dpi"] = image.info["dpi"]
        try:
            exif = image.getexif()
        except Exception as error:  # Pillow raises all kinds on damaged EXIF; the image itself is fine
            notes.append(f"its EXIF block could not be read and was dropped ({error})")
            return metadata, notes
        if exif:
            metadata["orientation"] = int(exif.get(ORIENTATION, 1) or 1)
            exif[ORIENTATION] = 1  # the pixels are written upright
            metadata["exif"] = exif.tobytes()
        return metadata, notes

    def for_decoding(self, data: bytes) -> bytes:
        """The bytes the decoder is given (a format whose decoders turn pixels themselves is patched here)."""
        return data

    def is_sixteen_bit(self, image: Image.Image, data: bytes) -> bool:
        """16 bits per sample, which Pillow would reduce to 8 for colour images (OpenCV reads them)."""
        return image.mode.startswith("I;16") or image.mode == "I"

    def save_options(self, image: Image.Image, metadata: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        """The image to save (converted where the format cannot hold it) and Pillow's save arguments."""
        options: dict[str, Any] = {}
        if "icc_profile" in metadata:
            options["icc_profile"] = metadata["icc_profile"]
        if "dpi" in metadata:
            options["dpi"] = metadata["dpi"]
        return image, options

    def encode_sixteen_bit(self, pixels: np.ndarray, metadata: dict[str, Any]) -> bytes:
        """A 16-bit result in this format; formats that cannot hold one are written as 16-bit PNG by the caller."""
        raise NotImplementedError(f"{self.name} holds no 16-bit pixels")

    @property
    def holds_sixteen_bits(self) -> bool:
        return type(self).encode_sixteen_bit is not ImageFormat.encode_sixteen_bit
