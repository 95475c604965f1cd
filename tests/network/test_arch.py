"""The network against the official one: structure, golden outputs, call convention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import DATA, require_winograd

from lib_codeformer import CodeFormer, accelerate
from lib_codeformer.acceleration import winograd
from lib_codeformer.acceleration.subpixel import upsample2x_conv3x3
from lib_codeformer.network.synthetic import REFERENCE_SHA256, parameter_shapes, state_dict_sha256

W_KEYS = {0.0: "out_w0p0", 0.5: "out_w0p5", 1.0: "out_w1p0"}


def test_state_dict_names_order_and_shapes_equal_the_released_checkpoint():
    manifest = [(name, tuple(shape)) for name, shape in json.loads((DATA / "codeformer_manifest.json").read_text())]
    assert parameter_shapes() == manifest


def test_synthetic_weights_reproduce_the_reference_fingerprint(reference_weights):
    assert state_dict_sha256(reference_weights) == REFERENCE_SHA256


def run_forms(model: torch.nn.Module, face_input: torch.Tensor) -> dict[float, tuple[torch.Tensor, ...]]:
    with torch.inference_mode():
        return {w: model(face_input, w=w, adain=True) for w in W_KEYS}


@pytest.fixture(scope="module")
def golden_runs(reference_model, fast_reference_model, face_input, monkeypatch_module):
    """Outputs at each w of each form: the pure network, accelerated with the Winograd kernel, and without it.

    Also records the kernel's calls (the weight shape of each), so the Winograd form is known to have used it,
    and how many gathered their output's GroupNorm statistics and how many were handed such statistics.
    """
    runs = {"pure": run_forms(reference_model, face_input)}
    calls = []
    moments = {"gathered": 0, "given": 0}
    original = winograd.conv3x3

    def recording(x, weight, *args, **kwargs):
        calls.append(tuple(weight.shape))
        moments["gathered"] += kwargs.get("output_moments") is not None
        moments["given"] += kwargs.get("input_moments") is not None
        return original(x, weight, *args, **kwargs)

    monkeypatch_module.setattr(winograd, "conv3x3", recording)
    if winograd.available():
        runs["winograd"] = run_forms(accelerate(fast_reference_model, winograd_kernel=True), face_input)
    runs["winograd calls"] = len(calls)
    runs["winograd shapes"] = sorted(set(calls))
    runs["moments"] = dict(moments)
    runs["pytorch"] = run_forms(accelerate(reference_model, winograd_kernel=False), face_input)
    runs["pytorch calls"] = len(calls) - runs["winograd calls"]
    accelerate(fast_reference_model, winograd_kernel=True)
    return runs


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("form", ["pure", "winograd", "pytorch"])
@pytest.mark.parametrize("w", list(W_KEYS))
def test_matches_official_network(golden_runs, golden, w, form):
    if form == "winograd":
        require_winograd()
        assert golden_runs["winograd calls"] > 0, "the accelerated network never called the Winograd kernel"
    if form == "pytorch":
        assert golden_runs["pytorch calls"] == 0, "the kernel ran although it was switched off"
    image, logits, lq_feat = (t.numpy() for t in golden_runs[form][w])
    np.testing.assert_array_equal(logits.argmax(axis=2), golden["top_idx"])
    assert np.abs(logits - golden["logits"]).max() <= 1e-3
    assert np.abs(lq_feat - golden["lq_feat"]).max() <= 1e-3
    difference = np.abs(image - golden[W_KEYS[w]])
    assert difference.max() <= 1e-3
    assert difference.mean() <= 1e-4


def test_residual_blocks_hand_their_first_convolutions_statistics_to_the_second(golden_runs):
    """Each block whose first convolution ran on the kernel gathered its output's statistics, and its second
    GroupNorm used them instead of a pass of its own (the outputs still match the official network, above)."""
    require_winograd()
    assert golden_runs["moments"]["gathered"] > 0
    assert golden_runs["moments"]["given"] == golden_runs["moments"]["gathered"]


# The widest build's output-channel block (AVX-512: 16 floats x 4) and the input-channel multiple of every build.
WIDEST_OUT_BLOCK = 64


def test_every_kernel_call_of_the_network_fits_every_build(golden_runs):
    """The layers that reach the kernel take the same path on AVX2 (blocks of 16) and AVX-512 (blocks of 64):
    no layer of the network is refused by one build and run by the other."""
    require_winograd()
    shapes = golden_runs["winograd shapes"]
    assert shapes, "the accelerated network never called the Winograd kernel"
    unfit = [shape for shape in shapes if shape[0] % WIDEST_OUT_BLOCK or shape[1] % winograd.CHANNEL_MULTIPLE]
    assert unfit == []


def test_codebook_lookup_is_exact(reference_model, golden):
    quant = reference_model.quantize.lookup(torch.from_numpy(golden["top_idx"]), 16, 16)
    np.testing.assert_array_equal(quant.detach().numpy(), golden["quant_feat"])


def test_transformer_alone_matches_official_logits(reference_model, golden):
    """The image sees the transformer only through argmax; check its logits directly."""
    with torch.inference_mode():
        logits = reference_model.predict_codes(torch.from_numpy(golden["lq_feat"]))
    assert np.abs(logits.numpy() - golden["logits"]).max() <= 2e-5


def test_output_changes_with_fidelity(golden_runs):
    faithful, quality = golden_runs["pure"][1.0][0], golden_runs["pure"][0.0][0]
    assert (faithful - quality).abs().mean() > 0.05


def test_weight_is_an_alias_of_w(small_model, small_faces):
    face = small_faces[:1]
    with torch.inference_mode():
        by_w = small_model(face, w=0.7, adain=True)[0]
        by_weight = small_model(face, weight=0.7, adain=True)[0]
        default = small_model(face, adain=True)[0]
    torch.testing.assert_close(by_w, by_weight, rtol=0, atol=0)
    assert not torch.equal(by_w, default)
    with pytest.raises(TypeError, match="not both"):
        small_model(face, w=0.5, weight=0.5)


def test_batch_equals_faces_one_by_one(small_model, small_faces):
    with torch.inference_mode():
        batched = small_model(small_faces, w=0.5, adain=True)[0]
        single = torch.cat([small_model(face[None], w=0.5, adain=True)[0] for face in small_faces])
    assert not torch.equal(batched[0], batched[1])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_per_face_fidelity_in_one_batch(small_model, small_faces):
    faces = small_faces[:2]
    with torch.inference_mode():
        mixed = small_model(faces, w=torch.tensor([0.0, 1.0]), adain=True)[0]
        at_zero = small_model(faces[:1], w=0.0, adain=True)[0]
        at_one = small_model(faces[1:], w=1.0, adain=True)[0]
    torch.testing.assert_close(mixed, torch.cat([at_zero, at_one]), rtol=1e-4, atol=5e-4)


def test_code_only_returns_logits_and_latent(small_model, small_faces):
    with torch.inference_mode():
        logits, lq_feat = small_model(small_faces[:1], code_only=True)
    assert logits.shape == (1, 256, 64)
    assert lq_feat.shape == (1, 32, 16, 16)


def test_rejects_input_that_is_not_an_aligned_512_face(small_model):
    with pytest.raises(ValueError, match=r"\(B, 3, 512, 512\)"):
        small_model(torch.zeros(1, 3, 256, 256))


@pytest.mark.parametrize("channels", [8, 32])
def test_subpixel_upsampling_equals_upsample_then_convolve(channels):
    generator = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 9, 7, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, channels, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    literal = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)
    torch.testing.assert_close(upsample2x_conv3x3(x, weight, bias), literal, rtol=1e-12, atol=1e-12)


def test_known_numerical_traps_are_avoided():
    with torch.device("meta"):
        model = CodeFormer()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.eps == 1e-6 and m.num_groups == 32 for m in norms)
    layer_norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(layer_norms) == 2 * 9 + 1 and all(m.eps == 1e-5 for m in layer_norms)
