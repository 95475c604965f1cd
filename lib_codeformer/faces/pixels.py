"""The pipeline's working form of an input image, and how to give the result back in the input's own form.

The pipeline works on one of three array shapes, uint8 or uint16: H x W
(gray), H x W x 3 (RGB) and H x W x 4 (RGBA). Arrays come back with their own
shape and dtype. PIL images come back in their own mode where that mode can
hold a restored face exactly (RGB, RGBA, L, LA, I, I;16): outside the faces
every value is the input's. Other modes come back as the nearest mode that
can: palette images (P, PA) as RGB/RGBA (a palette has too few colours for a
restored face), 1-bit as L, CMYK/YCbCr/LAB/HSV as RGB (their round trips
through RGB are not exact), and F (32-bit float, no fixed scale) as L, as
Pillow converts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# PIL modes given back as they came; everything else is converted (see the module docstring).
KEPT_MODES = ("RGB", "RGBA", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


@dataclass
class Pixels:
    """An input image as the pipeline's array, and how to give a result back in the input's form."""

    array: np.ndarray  # H x W (gray) or H x W x C with C in (3, 4); uint8 or uint16
    pil_mode: str | None = None  # the mode to give a PIL result back in; None for array inputs
    shape: tuple[int, ...] = ()  # an array input's own shape (H x W x 1 comes back so)

    @property
    def max_value(self) -> float:
        return 65535.0 if self.array.dtype == np.uint16 else 255.0

    @property
    def is_gray_array(self) -> bool:
        return self.array.ndim == 2

    @property
    def is_empty(self) -> bool:
        return self.array.shape[0] == 0 or self.array.shape[1] == 0

    def give_back(self, array: np.ndarray) -> np.ndarray | Image.Image:
        """``array`` (same layout as ``self.array``) in the input's own form."""
        if self.pil_mode is None:
            return array.reshape(self.shape)
        if self.pil_mode in _SIXTEEN_BIT_MODES:
            image = Image.fromarray(array.astype(np.int32) if self.pil_mode == "I" else array)
            return image if image.mode == self.pil_mode else image.convert(self.pil_mode)
        image = Image.fromarray(array)
        if self.pil_mode == "LA" and image.mode == "RGBA":
            return image.convert("LA")  # the work was done in RGBA; gray stays gray, so L is exact
        return image


def to_pixels(image: np.ndarray | Image.Image) -> Pixels:
    """The working form of an input image; TypeError/ValueError for what the pipeline cannot take."""
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array or a PIL image, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"images must be uint8 or uint16 (got {image.dtype})")
    array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"expected H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); got shape {image.shape}")
    return Pixels(array, None, tuple(image.shape))


def _from_pil(image: Image.Image) -> Pixels:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        return Pixels(np.clip(values, 0, 65535).astype(np.uint16), mode)
    if mode == "LA":
        return Pixels(np.array(image.convert("RGBA")), "LA")
    array = pillow_pixels(image)
    given_back = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[2]]
    return Pixels(array, given_back)


def pillow_pixels(image: Image.Image) -> np.ndarray:
    """8-bit pixels as the pipeline takes them: gray, RGB and RGBA as they are; 1-bit and float as gray;
    any other mode as RGB, or RGBA where it has an alpha channel or a transparent colour."""
    if image.mode in ("1", "F"):
        image = image.convert("L")
    elif image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.array(image)


def is_grayscale(array: np.ndarray, rows_per_chunk: int = 256) -> bool:
    """True for a one-channel image or one whose R, G and B are equal everywhere (checked in row chunks)."""
    if array.ndim == 2:
        return True
    for start in range(0, array.shape[0], rows_per_chunk):
        chunk = array[start : start + rows_per_chunk]
        if not (np.array_equal(chunk[:, :, 0], chunk[:, :, 1]) and np.array_equal(chunk[:, :, 0], chunk[:, :, 2])):
            return False
    return True
