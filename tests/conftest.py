"""Shared fixtures: weights and models are built once per session (a full forward costs seconds)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from support import DATA, IdentityNetwork, require_winograd

from lib_codeformer import CodeFormer, accelerate, load_codeformer
from lib_codeformer.network.synthetic import parameter_shapes, synthetic_state_dict

# Downloads and the compiled kernel go to a cache folder of the test run's own, never the user's.
_CACHE = tempfile.mkdtemp(prefix="codeformer-tests-")
os.environ["CODEFORMER_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# A network with the released structure but few channels and layers: for plumbing tests.
SMALL_CONFIG = {"dim_embd": 64, "n_head": 4, "n_layers": 2, "codebook_size": 64, "base_channels": 32, "embed_dim": 32}


@pytest.fixture(scope="session")
def reference_weights() -> dict[str, torch.Tensor]:
    """The seed-1234 synthetic weights the golden outputs were computed with."""
    return synthetic_state_dict(1234)


@pytest.fixture(scope="session")
def reference_model(reference_weights) -> CodeFormer:
    """The pure network with the reference weights."""
    return load_codeformer(reference_weights)


@pytest.fixture(scope="session")
def fast_reference_model(reference_model) -> torch.nn.Module:
    """Its accelerated form (what FaceRestorer runs), sharing the same parameters."""
    return accelerate(reference_model)


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
def small_weights_file(tmp_path_factory, small_weights) -> Path:
    """The small weights as a .safetensors file (70 MB: written once per session)."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "small.safetensors"
    save_file(dict(small_weights), path)
    return path


@pytest.fixture(scope="session")
def small_model(small_weights) -> torch.nn.Module:
    """The small network, accelerated (as FaceRestorer runs it)."""
    return accelerate(load_codeformer(small_weights))


@pytest.fixture(scope="session")
def small_faces() -> torch.Tensor:
    """Four different 512 x 512 inputs in [-1, 1]."""
    generator = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 16, 16, generator=generator), size=512, mode="bilinear")
    return smooth * 2 - 1


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def face_frames(astronaut) -> Callable[..., list[np.ndarray]]:
    """``face_frames(count, width, height)``: the astronaut's face drifting slowly (the steadiness clip, small)."""
    from lib_codeformer.testing.steadiness import SteadyClip

    def make(count: int = 8, width: int = 192, height: int = 160, **kwargs) -> list[np.ndarray]:
        return list(SteadyClip(astronaut, width=width, height=height, frames=count, scale=0.6, **kwargs))

    return make


@pytest.fixture
def identity_restorer():
    from lib_codeformer import FaceRestorer

    return FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu")


@pytest.fixture(scope="session")
def small_restorer(small_model):
    """A restorer with the small synthetic network: a real CodeFormer, fast enough for many tests."""
    from lib_codeformer import FaceRestorer

    return FaceRestorer(small_model, detector="yunet", device="cpu")


@pytest.fixture
def fast_conv_calls(monkeypatch):
    """Records each call of the Winograd kernel."""
    from lib_codeformer.acceleration import winograd

    require_winograd()
    original, calls = winograd.conv3x3, []

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(winograd, "conv3x3", counting)
    return calls


@pytest.fixture(autouse=True)
def no_pipeline_threads_left():
    """Every video pipeline a test runs stops its threads when it ends, error or not (they hold frames)."""
    import threading

    yield
    left = [thread for thread in threading.enumerate() if thread.name.startswith("codeformer-video")]
    for thread in left:
        thread.join(timeout=5)  # a stage finishing the item it holds
    assert not [thread.name for thread in left if thread.is_alive()], "a video pipeline's threads outlived it"
