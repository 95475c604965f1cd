"""Each image format's quirks in a module of its own, as Pillow keeps one plugin per format.

``storage.images`` reads and writes every format the same way (upright
pixels in, the same format and metadata out); what differs from one format
to the next is asked of its ``ImageFormat`` here: which metadata it carries
and how to keep it, whether its bytes need patching before decoding, which
decoder keeps its depth, how it is saved, how 16-bit results are encoded.
"""

from __future__ import annotations

from .base import ImageFormat
from .bmp import BMP
from .gif import GIF
from .jpeg import JPEG
from .png import PNG
from .tiff import TIFF
from .webp import WEBP

FORMATS: dict[str, ImageFormat] = {plugin.name: plugin for plugin in (PNG, JPEG, WEBP, BMP, TIFF, GIF)}


def format_of(name: str) -> ImageFormat:
    """The plugin for Pillow's format name (MPO, a phone's multi-picture JPEG, is JPEG); a plain one for others."""
    return FORMATS.get("JPEG" if name == "MPO" else name) or ImageFormat(name)


__all__ = ["FORMATS", "ImageFormat", "format_of"]
