"""Running the network: precision modes and the float32 fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from lib_codeformer import restore_aligned
from lib_codeformer.network import inference


def test_fp32_is_the_network_output_clamped(small_model, small_faces):
    faces = small_faces[:2]
    with torch.inference_mode():
        expected = small_model(faces, w=0.3, adain=True)[0].clamp(-1, 1)
    torch.testing.assert_close(restore_aligned(small_model, faces, 0.3), expected, rtol=0, atol=0)


def test_bf16_runs_and_stays_close(small_model, small_faces):
    faces = small_faces[:1]
    exact = restore_aligned(small_model, faces, 0.5)
    low = restore_aligned(small_model, faces, 0.5, precision="bf16")
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    # bf16 may pick a few other codes, so only require the same picture, not the same pixels.
    correlation = torch.corrcoef(torch.stack([low.flatten(), exact.flatten()]))[0, 1]
    assert correlation > 0.95
    assert not torch.equal(low, exact)


def test_non_finite_low_precision_output_is_recomputed_in_fp32(small_model, small_faces, monkeypatch, caplog):
    faces = small_faces[:1]
    real_forward = inference._forward
    calls = []

    def overflowing_forward(model, x, fidelity, precision, adain):
        calls.append(precision)
        out = real_forward(model, x, fidelity, precision, adain)
        return out.fill_(float("inf")) if precision != "fp32" else out

    monkeypatch.setattr(inference, "_forward", overflowing_forward)
    with caplog.at_level(logging.WARNING):
        result = restore_aligned(small_model, faces, 0.5, precision="bf16")
    assert calls == ["bf16", "fp32"]
    assert "recomputing" in caplog.text
    torch.testing.assert_close(result, restore_aligned(small_model, faces, 0.5), rtol=0, atol=0)


def test_unknown_precision_is_refused(small_model, small_faces):
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        restore_aligned(small_model, small_faces[:1], precision="int8")


def test_fp16_on_the_cpu_where_this_torch_cannot_autocast_it(small_model, small_faces):
    """torch 2.1 (AUTOMATIC1111's) autocasts the CPU to bfloat16 only: fp16 is refused up front, saying why."""
    from lib_codeformer import FaceRestorer
    from lib_codeformer.compat import autocast_supports

    if autocast_supports("cpu", torch.float16):
        assert restore_aligned(small_model, small_faces[:1], 0.5, precision="fp16").dtype == torch.float32
        assert FaceRestorer(small_model, device="cpu", precision="fp16").precision == "fp16"
    else:
        with pytest.raises(ValueError, match="fp16 cannot run on cpu"):
            restore_aligned(small_model, small_faces[:1], 0.5, precision="fp16")
        with pytest.raises(ValueError, match="fp16 cannot run on cpu"):
            FaceRestorer(small_model, device="cpu", precision="fp16")
