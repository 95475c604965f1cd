"""The fast ParseNet computes facexlib's masks: exact padding, scores within float rounding, the same labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib_codeformer.acceleration import winograd
from lib_codeformer.acceleration.layers import FastConv3x3
from lib_codeformer.faces.parsenet_fast import accelerate_parsenet, reflect_pad1
from lib_codeformer.network.synthetic import random_weights_like

parsenet = pytest.importorskip("facexlib.parsing.parsenet")


@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (2, 5, 3, 7), (1, 16, 9, 4)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "cropped view"])
@pytest.mark.parametrize("upsample", [False, True])
def test_reflect_pad1_is_pytorchs_reflection_padding(shape, layout, upsample):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    given = x
    if layout == "channels_last":
        given = x.contiguous(memory_format=torch.channels_last)
    elif layout == "cropped view":
        given = F.pad(x, (1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)[:, :, 1:-1, 1:-1]
    expected = F.interpolate(x, scale_factor=2, mode="nearest") if upsample else x
    expected = F.pad(expected, (1, 1, 1, 1), mode="reflect")
    assert torch.equal(reflect_pad1(given, upsample=upsample), expected)


def test_reflect_pad1_refuses_what_cannot_be_reflected():
    with pytest.raises(ValueError, match="at least 2 x 2"):
        reflect_pad1(torch.zeros(1, 1, 1, 5))


@pytest.fixture(scope="module")
def parsenet_and_faces(astronaut):
    """facexlib's ParseNet at 256 px (every kind of layer, a quarter of the cost) and two real faces for it."""
    import cv2

    model = parsenet.ParseNet(in_size=256, out_size=256, parsing_ch=19)
    model.load_state_dict(random_weights_like(model, 3))
    face = cv2.resize(astronaut[20:300, 120:400], (256, 256), interpolation=cv2.INTER_AREA)
    faces = torch.from_numpy(np.stack([face, face[:, ::-1]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        reference = model.eval()(faces)[0]
    return model, faces, reference


@pytest.mark.parametrize("use_winograd", [False, True])
def test_fast_parsenet_matches_facexlib(parsenet_and_faces, use_winograd, monkeypatch):
    model, faces, reference = parsenet_and_faces
    fast = accelerate_parsenet(model, use_winograd=use_winograd)
    kernel_calls = []
    run = winograd.run

    def counting_run(*args, **kwargs):
        kernel_calls.append(kwargs.get("reflect", False))
        return run(*args, **kwargs)

    monkeypatch.setattr(winograd, "run", counting_run)
    with torch.inference_mode():
        scores = fast(faces)
    assert scores.shape == reference.shape
    assert (scores - reference).abs().max() <= 1e-5 * reference.abs().max()
    agreement = (scores.argmax(dim=1) == reference.argmax(dim=1)).float().mean().item()
    assert agreement >= 0.9999  # only near-ties may flip
    kernel_layers = [m for m in fast.modules() if isinstance(m, FastConv3x3)]
    assert kernel_layers and all(layer.use_winograd is use_winograd for layer in kernel_layers)
    assert bool(kernel_calls) is (use_winograd and winograd.available()), "the kernel ran where it should not, or never"
    assert all(kernel_calls), "the kernel pads by reflection itself: no padded copy of the input is made for it"


def test_fast_parsenet_leaves_facexlibs_model_unchanged(parsenet_and_faces):
    model = parsenet_and_faces[0]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    accelerate_parsenet(model)
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert next(model.parameters()).is_contiguous()  # not switched to channels-last behind facexlib's back
