"""Shared fixtures: weights and models are built once per session (a full forward costs seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib_codeformer import CodeFormer, load_codeformer
from lib_codeformer.synthetic import parameter_shapes, synthetic_state_dict

DATA = Path(__file__).parent / "data"

# A network with the released structure but few channels and layers: for plumbing tests.
SMALL_CONFIG = {"dim_embd": 64, "n_head": 4, "n_layers": 2, "codebook_size": 64, "base_channels": 32, "embed_dim": 32}


@pytest.fixture(scope="session")
def reference_weights() -> dict[str, torch.Tensor]:
    """The seed-1234 synthetic weights the golden outputs were computed with."""
    return synthetic_state_dict(1234)


@pytest.fixture(scope="session")
def reference_model(reference_weights) -> CodeFormer:
    return load_codeformer(reference_weights)


@pytest.fixture(scope="session")
def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "golden_seed1234.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def face_input() -> torch.Tensor:
    """The golden input: input_face.png as (1, 3, 512, 512) float32 in [-1, 1], by the documented rule."""
    from PIL import Image

    pixels = np.asarray(Image.open(DATA / "input_face.png").convert("RGB"))
    scaled = (pixels.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    return torch.from_numpy((scaled - 0.5) / 0.5)


@pytest.fixture(scope="session")
def small_weights() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = parameter_shapes(CodeFormer(**SMALL_CONFIG))
    return synthetic_state_dict(7, shapes)


@pytest.fixture(scope="session")
def small_model(small_weights) -> CodeFormer:
    return load_codeformer(small_weights)


@pytest.fixture(scope="session")
def small_faces() -> torch.Tensor:
    """Four different 512 x 512 inputs in [-1, 1]."""
    generator = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 16, 16, generator=generator), size=512, mode="bilinear")
    return smooth * 2 - 1
