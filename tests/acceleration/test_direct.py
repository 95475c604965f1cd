"""Direct 3x3 convolutions of layers with few channels on one side, and GroupNorms on their own: equal to PyTorch's,
used only where they may be."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support import kernel_block as block
from support import require_winograd
from torch import nn

from lib_codeformer.acceleration import accelerate, direct, kernel_build, winograd
from lib_codeformer.acceleration.layers import FastConv3x3, FastGroupNorm
from lib_codeformer.network.arch import VQGANShape, VQGenerator

SIDE = round(direct.MIN_PIXELS**0.5)


@pytest.fixture(autouse=True)
def kernel_required():
    require_winograd()


def make(batch, in_channels, out_channels, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, height, width, generator=generator) * 2 + 0.5
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) / (3 * in_channels**0.5)
    bias = torch.randn(out_channels, generator=generator)
    return x, weight, bias


def expected(x, weight, bias):
    return F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)


def assert_close(got, want):
    error = float((got.double() - want).abs().max())
    assert error <= 2e-6 * float(want.abs().max()), error


@pytest.mark.parametrize(
    ("batch", "in_channels", "height", "width"),
    [
        (1, 3, 16, 16),  # an RGB image, the smallest side
        (2, 3, 9, 37),  # rows of 37 pixels: a partial step of the micro-kernel's 6 at each row's end
        (1, 1, 1, 1),
        (1, 15, 5, 7),  # the most input channels this form takes (16 go to the Winograd kernel)
    ],
)
@pytest.mark.parametrize("out_blocks", [1, 2])
@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
def test_few_inputs_equal_pytorchs_convolution(batch, in_channels, height, width, out_blocks, threads):
    x, weight, bias = make(batch, in_channels, out_blocks * block(), height, width)
    with torch.inference_mode():
        got = direct.conv3x3(x, weight, bias)
    want = expected(x, weight, bias)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert_close(got, want)


@pytest.mark.parametrize(
    ("batch", "out_channels", "height", "width"),
    [
        (1, 3, 16, 16),  # to an RGB image
        (2, 1, 7, 5),  # rows narrower than one group of pixels and its border: every group at an edge
        (1, 4, 3, 23),  # interior groups, a partial last group; one output pass of the most channels
        (1, 2, 12, 13),
    ],
)
@pytest.mark.parametrize("in_vectors", [1, 4])
@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
def test_few_outputs_equal_pytorchs_convolution(batch, out_channels, height, width, in_vectors, threads):
    in_channels = in_vectors * kernel_build.kernel().vector_floats
    x, weight, bias = make(batch, in_channels, out_channels, height, width)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = direct.conv3x3(x, weight, bias)
    want = expected(x, weight, bias)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert_close(got, want)


@pytest.mark.parametrize("out_channels", [3, 0], ids=["few outputs", "few inputs"])
def test_without_bias(out_channels):
    in_channels = 16 if out_channels else 3
    x, weight, _ = make(1, in_channels, out_channels or block(), 10, 11)
    with torch.inference_mode():
        assert_close(direct.conv3x3(x, weight), expected(x, weight, None))


def test_a_large_output_is_streamed_with_the_same_values(monkeypatch):
    """Outputs from the last-level cache's size on go straight to memory, as the Winograd kernel's do."""
    x, weight, bias = make(2, 3, block(), 20, 21)
    with torch.inference_mode():
        ordinary = direct.conv3x3(x, weight, bias).clone()
        monkeypatch.setattr(direct, "last_level_cache_bytes", lambda: 1)
        streamed = direct.conv3x3(x, weight, bias)
    assert torch.equal(streamed, ordinary)


@pytest.mark.parametrize(
    ("case", "in_channels", "out_channels", "side", "applies"),
    [
        ("an RGB image in", 3, None, SIDE, True),
        ("an RGB image out", 16, 3, SIDE, True),
        ("many channels both sides: the Winograd kernel's", 16, None, SIDE, False),
        ("few both sides, inputs not in whole vectors", 3, 3, SIDE, False),
        ("few inputs, outputs not in the kernel's blocks", 3, 40, SIDE, False),
        ("a small image", 3, None, SIDE - 1, False),
    ],
)
def test_applies_where_one_side_has_few_channels(case, in_channels, out_channels, side, applies):
    x = torch.randn(1, in_channels, side, side)
    assert direct.applies(x, torch.randn(out_channels or block(), in_channels, 3, 3)) is applies


def test_applies_not_to_autograd_autocast_or_with_the_kernel_switched_off(monkeypatch):
    x, weight = torch.randn(1, 3, SIDE, SIDE), torch.randn(block(), 3, 3, 3)
    assert direct.applies(x, weight)
    assert not direct.applies(x.requires_grad_(), weight)
    x = x.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not direct.applies(x, weight)
    monkeypatch.setenv(kernel_build.ENV_SWITCH, "0")
    assert not direct.applies(x, weight)


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("input not 4-D", {"x": torch.zeros(3, 8, 8)}),
        ("input float64", {"x": torch.zeros(1, 3, 8, 8, dtype=torch.float64)}),
        ("empty input", {"x": torch.zeros(0, 3, 8, 8)}),
        ("weights for other channels", {"weight": torch.zeros(64, 4, 3, 3)}),
        ("1x1 weights", {"weight": torch.zeros(64, 3, 1, 1)}),
        ("no few-channel side", {"x": torch.zeros(1, 16, 8, 8), "weight": torch.zeros(64, 16, 3, 3)}),
        ("bias of the wrong size", {"bias": torch.zeros(3)}),
    ],
)
def test_arguments_are_checked_before_the_kernel_reads_memory(case, change):
    call = {"x": torch.zeros(1, 3, 8, 8), "weight": torch.zeros(block(), 3, 3, 3), "bias": None} | change
    with pytest.raises(ValueError), torch.inference_mode():
        direct.conv3x3(call["x"], call["weight"], call["bias"])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc"), reason="x86-64 builds need gcc")
@pytest.mark.parametrize(("target", "vector_floats"), [("-march=x86-64-v3", 8), ("-march=x86-64", 4)], ids=["avx2", "sse2"])
def test_other_vector_widths_compute_the_same(tmp_path, target, vector_floats):
    if vector_floats == 8 and " avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU has no AVX2")
    library = tmp_path / "winograd.so"
    subprocess.run(kernel_build.compile_command("gcc", ["-O3", target], library), check=True)
    loaded = winograd.Kernel(ctypes.CDLL(str(library)))
    for in_channels, out_channels in [(3, loaded.out_channel_multiple), (2 * vector_floats, 3)]:
        x, weight, bias = make(2, in_channels, out_channels, 11, 19)
        with torch.inference_mode():
            assert_close(direct.run(loaded, x, weight, bias), expected(x, weight, bias))


@pytest.mark.parametrize("use_winograd", [True, False], ids=["kernel", "pytorch"])
@pytest.mark.parametrize(("in_channels", "out_channels"), [(3, 0), (16, 3)], ids=["rgb in", "rgb out"])
def test_the_convolution_module_takes_the_direct_form_where_it_applies(use_winograd, in_channels, out_channels, monkeypatch):
    calls = []
    real = direct.conv3x3
    monkeypatch.setattr(direct, "conv3x3", lambda *arguments: calls.append(1) or real(*arguments))
    conv = nn.Conv2d(in_channels, out_channels or block(), 3, padding=1)
    fast = FastConv3x3.adopt(conv, use_winograd=use_winograd)
    x = torch.randn(1, in_channels, SIDE, SIDE + 3)
    with torch.inference_mode():
        assert_close(fast(x), conv(x).double())
    assert len(calls) == (1 if use_winograd else 0)


def random_norm(groups, channels, seed=4, affine=True):
    norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=affine)
    if affine:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5, generator=generator)
            norm.bias.uniform_(-0.5, 0.5, generator=generator)
    return norm


@pytest.mark.parametrize("affine", [True, False], ids=["with-parameters", "without-parameters"])
@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
def test_a_group_norm_on_the_kernel_equals_pytorchs(affine, layout):
    """Per image and group, about a large offset (the statistics are summed about a shift, in float64)."""
    channels = 2 * kernel_build.kernel().vector_floats
    norm = random_norm(8, channels, affine=affine)
    x = torch.randn(2, channels, 9, 13) * 3
    x[1] += 1000.0
    if layout == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    fast = FastGroupNorm.adopt(norm, use_winograd=True)
    with torch.inference_mode():
        assert winograd.normalises(x, fast)
        got = fast(x)
        want = norm.double()(x.double())
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert float((got.double() - want).abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("case", "make_input"),
    [
        ("channels not in whole vectors", lambda channels: torch.randn(1, channels + 2, 4, 4)),
        ("float64", lambda channels: torch.randn(1, channels, 4, 4, dtype=torch.float64)),
        ("an input that needs gradients", lambda channels: torch.randn(1, channels, 4, 4, requires_grad=True)),
    ],
)
def test_a_group_norm_falls_back_to_pytorch_where_the_kernel_does_not_take_it(case, make_input):
    channels = 2 * kernel_build.kernel().vector_floats
    x = make_input(channels)
    norm = nn.GroupNorm(2, x.shape[1], eps=1e-6).to(x.dtype)
    fast = FastGroupNorm.adopt(norm, use_winograd=True)
    assert not winograd.normalises(x, fast)
    assert torch.equal(fast(x), norm(x))


def test_only_plain_group_norms_are_adopted():
    class Other(nn.GroupNorm):
        pass

    with pytest.raises(ValueError, match="not a plain GroupNorm"):
        FastGroupNorm.adopt(Other(2, 16), use_winograd=True)


def test_accelerate_takes_the_generators_last_norm_and_convolution_keeping_the_state_dict():
    shape = VQGANShape(base_channels=32, channel_multipliers=(1, 2), res_blocks=1, resolution=32, attn_resolutions=frozenset())
    pure = VQGenerator(shape).eval()
    with torch.no_grad():
        for parameter in pure.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    fast = accelerate(pure)
    norm, conv = fast.blocks[-2], fast.blocks[-1]
    assert isinstance(norm, FastGroupNorm) and isinstance(conv, FastConv3x3)
    assert list(fast.state_dict()) == list(pure.state_dict())
    x = torch.randn(1, shape.embed_dim, 16, 16)
    with torch.inference_mode():
        h = x
        for layer in fast.blocks[:-2]:
            h = layer(h)
        assert winograd.normalises(h, norm) and direct.applies(norm(h), conv.weight)
        got, want = conv(norm(h)), h
        for layer in pure.blocks[len(pure.blocks) - 2 :]:
            want = layer(want)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
