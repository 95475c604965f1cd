"""1x1 convolutions on the kernel's products: equal to PyTorch's, used only where they may be, the residual in place."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import kernel_block as block
from support import require_winograd
from torch import nn

from lib_codeformer.acceleration import accelerate, kernel_build, pointwise
from lib_codeformer.acceleration.layers import FastConv1x1, FastResnetBlock
from lib_codeformer.network.arch import ResnetBlock

SIDE = round(pointwise.MIN_PIXELS**0.5)


@pytest.fixture(autouse=True)
def kernel_required():
    require_winograd()


def make(batch, in_channels, out_channels, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, height, width, generator=generator)
    weight = torch.randn(out_channels, in_channels, 1, 1, generator=generator) / in_channels**0.5
    bias = torch.randn(out_channels, generator=generator)
    residual = torch.randn(batch, out_channels, height, width, generator=generator)
    return x, weight, bias, residual


def expected(x, weight, bias, residual=None):
    out = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double())
    return out if residual is None else out + residual.double()


def assert_close(got, want):
    error = float((got.double() - want).abs().max())
    assert error <= 2e-5 * float(want.abs().max()), error


@pytest.mark.parametrize(
    ("batch", "in_channels", "height", "width"),
    [
        (1, 16, 1, 1),  # fewer pixels than one step of the micro-kernel
        (2, 48, 5, 7),  # 70 pixels: a tail of 4 after whole steps
        (1, 300, 9, 11),  # more input channels than one chunk of weights, and an odd count
        (2, 128, 16, 18),  # several steps of 96 pixels per thread
    ],
)
@pytest.mark.parametrize("residual_kind", ["none", "channels-last, in place", "NCHW, into new memory"])
@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
def test_equals_pytorchs_convolution(batch, in_channels, height, width, residual_kind, threads):
    out_channels = 2 * block()
    x, weight, bias, residual = make(batch, in_channels, out_channels, height, width)
    given = {
        "none": None,
        "channels-last, in place": residual.contiguous(memory_format=torch.channels_last),
        "NCHW, into new memory": residual.clone(),
    }[residual_kind]
    want = expected(x, weight, bias, None if given is None else residual)
    with torch.inference_mode():
        got = pointwise.conv1x1(x, weight, bias, given)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert_close(got, want)
    if given is not None:
        # A 1 x 1 image is channels-last and NCHW at once: that residual is written over too.
        in_place = given.is_contiguous(memory_format=torch.channels_last)
        assert in_place is (residual_kind == "channels-last, in place" or height * width == 1)
        assert (got.data_ptr() == given.data_ptr()) is in_place
        if not in_place:
            assert torch.equal(given, residual)


def test_without_bias():
    x, weight, _, _ = make(1, 32, block(), 8, 8)
    with torch.inference_mode():
        assert_close(pointwise.conv1x1(x, weight), expected(x, weight, None))


def test_a_residual_in_the_inputs_memory_is_not_overwritten_while_read():
    """out = conv(x) + x with x the residual too: writing over it would feed half-written rows to later channel blocks."""
    channels = 2 * block()
    x, weight, bias, _ = make(1, channels, channels, 10, 10)
    x = x.contiguous(memory_format=torch.channels_last)
    original = x.clone()
    with torch.inference_mode():
        got = pointwise.conv1x1(x, weight, bias, x)
    assert_close(got, expected(original, weight, bias, original))
    assert torch.equal(x, original)


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("input not 4-D", {"x": torch.zeros(32, 8, 8)}),
        ("input float64", {"x": torch.zeros(1, 32, 8, 8, dtype=torch.float64)}),
        ("empty input", {"x": torch.zeros(0, 32, 8, 8)}),
        ("weights for other channels", {"weight": torch.zeros(64, 16, 1, 1)}),
        ("3x3 weights", {"weight": torch.zeros(64, 32, 3, 3)}),
        ("output channels not in the kernel's blocks", {"weight": torch.zeros(60, 32, 1, 1)}),
        ("bias of the wrong size", {"bias": torch.zeros(32)}),
        ("residual of the wrong size", {"residual": torch.zeros(1, 64, 4, 8)}),
        ("residual float64", {"residual": torch.zeros(1, 64, 8, 8, dtype=torch.float64)}),
    ],
)
def test_arguments_are_checked_before_the_kernel_reads_memory(case, change):
    call = {"x": torch.zeros(1, 32, 8, 8), "weight": torch.zeros(64, 32, 1, 1), "bias": None, "residual": None} | change
    with pytest.raises(ValueError), torch.inference_mode():
        pointwise.conv1x1(call["x"], call["weight"], call["bias"], call["residual"])


@pytest.mark.parametrize(
    ("case", "make_input", "weight"),
    [
        ("a small image", lambda: torch.randn(1, 32, SIDE // 2, SIDE), torch.randn(64, 32, 1, 1)),
        ("float64", lambda: torch.randn(1, 32, SIDE, SIDE, dtype=torch.float64), torch.randn(64, 32, 1, 1).double()),
        ("3x3 weights", lambda: torch.randn(1, 32, SIDE, SIDE), torch.randn(64, 32, 3, 3)),
        ("output channels not in blocks", lambda: torch.randn(1, 32, SIDE, SIDE), torch.randn(3, 32, 1, 1)),
        ("an input that needs gradients", lambda: torch.randn(1, 32, SIDE, SIDE, requires_grad=True), torch.randn(64, 32, 1, 1)),
    ],
)
def test_applies_only_where_the_kernel_computes_it_and_pays(case, make_input, weight):
    assert pointwise.applies(torch.randn(1, 32, SIDE, SIDE), torch.randn(64, 32, 1, 1))
    assert not pointwise.applies(make_input(), weight)


def test_applies_not_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not pointwise.applies(torch.randn(1, 32, SIDE, SIDE), torch.randn(64, 32, 1, 1))


def test_not_applied_with_the_kernel_switched_off(monkeypatch):
    monkeypatch.setenv(kernel_build.ENV_SWITCH, "0")
    assert not pointwise.applies(torch.randn(1, 32, SIDE, SIDE), torch.randn(64, 32, 1, 1))


@pytest.mark.parametrize("use_winograd", [True, False], ids=["kernel", "pytorch"])
def test_the_module_adds_the_residual_on_either_path(use_winograd, monkeypatch):
    calls = []
    real = pointwise.conv1x1
    monkeypatch.setattr(pointwise, "conv1x1", lambda *arguments: calls.append(1) or real(*arguments))
    conv = nn.Conv2d(32, 2 * block(), 1)
    fast = FastConv1x1.adopt(conv, use_winograd=use_winograd)
    assert fast.weight is conv.weight and fast.bias is conv.bias
    x, _, _, residual = make(1, 32, 2 * block(), SIDE, SIDE)
    with torch.inference_mode():
        want = conv(x).double() + residual.double()
        assert_close(fast(x, residual.clone()), want)
        assert_close(fast(x), conv(x).double())
    assert len(calls) == (2 if use_winograd else 0)


def test_gradients_flow_through_the_fallback():
    fast = FastConv1x1(32, 64)
    x = torch.randn(1, 32, SIDE, SIDE, requires_grad=True)
    fast(x, torch.randn(1, 64, SIDE, SIDE)).sum().backward()
    assert x.grad is not None and fast.weight.grad is not None


def test_a_residual_that_needs_gradients_keeps_them():
    """The kernel's result has no gradient: a residual autograd tracks is added by PyTorch, not written over."""
    fast = FastConv1x1(32, 64).requires_grad_(False)
    residual = torch.randn(1, 64, SIDE, SIDE, requires_grad=True)
    fast(torch.randn(1, 32, SIDE, SIDE), residual).sum().backward()
    assert torch.equal(residual.grad, torch.ones_like(residual))


@pytest.mark.parametrize(
    "conv",
    [nn.Conv2d(16, 32, 1, stride=2), nn.Conv2d(16, 32, 1, padding=1), nn.Conv2d(16, 32, 1, groups=2), nn.Conv2d(16, 32, 3)],
    ids=["stride", "padding", "groups", "3x3"],
)
def test_only_plain_1x1_convolutions_are_adopted(conv):
    with pytest.raises(ValueError, match="not a plain 1x1 convolution"):
        FastConv1x1.adopt(conv, use_winograd=True)


@pytest.mark.parametrize("winograd_kernel", [True, False], ids=["kernel", "pytorch"])
def test_a_residual_block_with_a_projected_shortcut_equals_the_pure_block(winograd_kernel):
    torch.manual_seed(3)
    out_channels = 2 * block()
    in_channels = out_channels + 32  # other than the output's, so that a 1x1 convolution projects the shortcut
    pure = nn.Sequential(ResnetBlock(in_channels, out_channels)).eval()
    with torch.no_grad():
        for parameter in pure.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    fast = accelerate(pure, winograd_kernel=winograd_kernel)
    assert isinstance(fast[0], FastResnetBlock) and isinstance(fast[0].conv_out, FastConv1x1)
    assert fast[0].conv_out.use_winograd is winograd_kernel
    assert list(fast.state_dict()) == list(pure.state_dict())
    x = torch.randn(2, in_channels, SIDE, SIDE + 3)
    with torch.inference_mode():
        want = pure.double()(x.double())
        pure.float()
        assert_close(fast(x), want)
