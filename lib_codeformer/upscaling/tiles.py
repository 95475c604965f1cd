"""Tiles of a large image: where each lies, and the weights that blend their overlaps (pure functions).

A network enlarges an image tile by tile so that memory holds one tile and
its output, not the whole enlarged image; neighbouring tiles overlap, and
inside each overlap the two outputs are mixed by linear ramps that sum to 1,
so no seam shows.
"""

from __future__ import annotations

import numpy as np


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans of at most ``tile`` covering ``0..length``, consecutive ones sharing ``overlap``.

    The last span ends at ``length`` exactly (shifted back rather than cut
    short), so every span but a single one is a full tile.
    """
    if length <= tile:
        return [(0, length)]
    if not 0 <= overlap < tile:
        raise ValueError(f"the overlap must be in [0, tile) (got {overlap} for tiles of {tile})")
    step = tile - overlap
    starts = [*range(0, length - tile, step), length - tile]
    return [(start, start + tile) for start in starts]


def ramp(span: tuple[int, int], previous: tuple[int, int] | None, following: tuple[int, int] | None) -> np.ndarray:
    """The weight of each position of ``span``: rising over its overlap with ``previous``, falling over its
    overlap with ``following``, 1 elsewhere. Two overlapping spans' weights sum to 1 at every shared position."""
    start, end = span
    weights = np.ones(end - start, dtype=np.float32)
    if previous is not None and previous[1] > start:
        shared = previous[1] - start
        weights[:shared] = (np.arange(shared, dtype=np.float32) + 0.5) / shared
    if following is not None and following[0] < end:
        shared = end - following[0]
        weights[-shared:] = np.minimum(weights[-shared:], (shared - 0.5 - np.arange(shared, dtype=np.float32)) / shared)
    return weights


def ramps(all_spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """``ramp`` for each of a row's (or column's) spans."""
    return [
        ramp(span, all_spans[index - 1] if index else None, all_spans[index + 1] if index + 1 < len(all_spans) else None)
        for index, span in enumerate(all_spans)
    ]
