"""BMP: nothing of its own beyond the common rules (lossless, 8 bits)."""

from __future__ import annotations

from .base import ImageFormat

BMP = ImageFormat("BMP", decoded_by_opencv=True)
