"""Enlarging: restored faces larger than CodeFormer's 512 px crop, and whole images (``--upscale``).

CodeFormer restores faces at 512 x 512. A face that covers more of the image
is otherwise stretched back with plain interpolation and comes back softer
than the skin and hair around it; with an upscaler, the restored face is
enlarged to about its size on the image first (``FaceRestorer``'s
``face_upscaler``), so paste-back samples a face at the right resolution.

- ``base``: the ``Upscaler`` protocol every front end's upscaler meets (the
  WebUI's own upscalers, ComfyUI's UPSCALE_MODEL, a model file), Lanczos,
  and ``enlarge`` (exactly the size asked, every failure one error);
- ``tiles``: where the tiles of a large image lie and how their overlaps blend (pure);
- ``models``: super-resolution model files loaded with spandrel, safely, run in tiles;
- ``image``: a whole image enlarged tile by tile (memory bounded by a tile, not the output).
"""

from __future__ import annotations

from ..exports import lazy_exports

_EXPORTS = {
    "Upscaler": "base",
    "Lanczos": "base",
    "UpscalerError": "base",
    "enlarge": "base",
    "load_upscaler": "models",
    "ModelUpscaler": "models",
    "upscale_image": "image",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
