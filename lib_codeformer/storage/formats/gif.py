"""GIF: a still GIF is read (an animated one is restored as a video); a restored face does not fit 256 colours."""

from __future__ import annotations

from .base import ImageFormat

GIF = ImageFormat("GIF", writable=False)
