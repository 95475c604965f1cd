"""Frames for the video tests: small (a few dozen frames of 160-320 px) and deterministic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


@pytest.fixture(scope="session")
def plain_frames() -> Callable[..., list[np.ndarray]]:
    """``plain_frames(count, width, height)``: moving colour gradients, no face anywhere."""

    def make(count: int = 6, width: int = 96, height: int = 64) -> list[np.ndarray]:
        yy, xx = np.mgrid[0:height, 0:width]
        return [
            np.stack([(xx * 2 + 9 * i) % 256, (yy * 3 + 5 * i) % 256, ((xx + yy) + 13 * i) % 256], axis=2).astype(np.uint8)
            for i in range(count)
        ]

    return make
