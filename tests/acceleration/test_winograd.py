"""The Winograd convolution kernel: equal to PyTorch's convolution, used only where it may be, safe to lack."""

from __future__ import annotations

import ctypes
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support import require_winograd
from torch import nn

from lib_codeformer.acceleration import kernel_build, winograd
from lib_codeformer.acceleration.layers import FastConv3x3
from lib_codeformer.storage.atomic import is_temporary
from lib_codeformer.testing.machine import cpu_family

ROOT = Path(__file__).resolve().parents[1]
SIDE = round(winograd.MIN_PIXELS**0.5)  # the smallest square image the network's layers use it for

@pytest.fixture(autouse=True)
def kernel_required():
    """Every test here needs the kernel; CI sets CODEFORMER_REQUIRE_FAST_CONV so a broken build fails, not skips."""
    require_winograd()


@torch.no_grad()
def reference(x, weight, bias, residual=None, norm=None, upsample=False):
    """The unfused steps in float64."""
    x = x.double()
    if norm is not None:
        x = F.silu(norm.double()(x))
    if upsample:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    out = F.conv2d(x, weight.double(), None if bias is None else bias.double(), padding=1)
    return out if residual is None else out + residual.double()


# Largest error allowed, relative to the result's largest value: float32 rounding, which Winograd's
# transforms amplify a few times over a direct convolution's; F(6x6)'s larger coefficients (up to 32)
# about twice as much as F(4x4)'s (measured: 2.3e-05 for 256 input channels, upsampled).
TOLERANCE = {4: 2e-5, 6: 5e-5}


def assert_float32_close(got: torch.Tensor, expected: torch.Tensor, tile: int = 4) -> None:
    """Within float32 rounding of the result's scale for this tile size."""
    error = float((got.double() - expected).abs().max())
    scale = float(expected.abs().max())
    print(f"max error {error:.2e}, {error / scale:.2e} of the largest value")
    assert error <= TOLERANCE[tile] * scale


def random_norm(channels: int, generator: torch.Generator) -> nn.GroupNorm:
    norm = nn.GroupNorm(min(32, channels // 2), channels, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-0.5, 0.5, generator=generator)
    return norm


@pytest.mark.parametrize(
    ("batch", "in_channels", "out_channels", "height", "width"),
    [
        (1, 64, 64, 32, 32),
        (3, 16, 64, 37, 41),
        (2, 128, 128, 8, 5),
        (1, 48, 192, 1, 1),
        (1, 256, 128, 64, 64),
        # Channels in a whole chunk of the products plus a part of one, and (shared schedule) groups of
        # tiles that straddle the two images.
        (2, 320, 64, 40, 40),
    ],
)
@pytest.mark.parametrize("fused", ["none", "bias+residual", "norm", "upsample", "all"])
@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("shared", [False, True], ids=["per-thread-blocks", "shared-schedule"])
def test_equals_the_unfused_steps(batch, in_channels, out_channels, height, width, fused, tile, shared):
    generator = torch.Generator().manual_seed(batch * 1000 + in_channels + height)
    x = torch.randn(batch, in_channels, height, width, generator=generator) * 2 + 0.5
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) / (3 * in_channels**0.5)
    bias = torch.randn(out_channels, generator=generator) if fused in ("bias+residual", "all") else None
    norm = random_norm(in_channels, generator) if fused in ("norm", "all") else None
    upsample = fused in ("upsample", "all")
    scale = 2 if upsample else 1
    residual = None
    if fused in ("bias+residual", "all"):
        residual = torch.randn(batch, out_channels, height * scale, width * scale, generator=generator)
    with torch.inference_mode():
        got = winograd.conv3x3(x, weight, bias, residual, norm=norm, upsample=upsample, tile=tile, shared=shared)
        expected = reference(x, weight, bias, residual, norm, upsample)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert_float32_close(got, expected, tile)


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 2, 2), (2, 13, 9), (1, 32, 32), (1, 40, 27)])
@pytest.mark.parametrize("upsample", [False, True], ids=["same-size", "upsampled"])
@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("shared", [False, True], ids=["per-thread-blocks", "shared-schedule"])
def test_reflection_padding_equals_pytorchs(batch, height, width, upsample, tile, shared):
    """F.pad(x, (1, 1, 1, 1), mode="reflect") before the convolution (facexlib's ParseNet pads so): the padding
    reflected in the (upsampled) input, the tiles past the image reading zeros."""
    generator = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(batch, 32, height, width, generator=generator)
    weight = torch.randn(64, 32, 3, 3, generator=generator) / 17
    bias = torch.randn(64, generator=generator)
    with torch.inference_mode():
        got = winograd.conv3x3(x, weight, bias, upsample=upsample, reflect=True, tile=tile, shared=shared)
        produced = F.interpolate(x.double(), scale_factor=2.0, mode="nearest") if upsample else x.double()
        expected = F.conv2d(F.pad(produced, (1, 1, 1, 1), mode="reflect"), weight.double(), bias.double())
    assert got.shape == expected.shape
    assert_float32_close(got, expected, tile)


def test_reflection_padding_needs_two_pixels_a_side():
    with pytest.raises(ValueError, match="at least 2 x 2"), torch.inference_mode():
        winograd.conv3x3(torch.zeros(1, 16, 1, 5), torch.zeros(64, 16, 3, 3), reflect=True)


# Winograd's filter transforms G for output tiles of 4 and 6 (interpolation points 0, +-1, +-2, (+-1/2,) infinity).
FILTER_TRANSFORMS = {
    4: [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    6: [
        [1, 0, 0],
        [-2 / 9, -2 / 9, -2 / 9],
        [-2 / 9, 2 / 9, -2 / 9],
        [1 / 90, 1 / 45, 2 / 45],
        [1 / 90, -1 / 45, 2 / 45],
        [32 / 45, 16 / 45, 8 / 45],
        [32 / 45, -16 / 45, 8 / 45],
        [0, 0, 1],
    ],
}


def g_g_gt(weight: torch.Tensor, tile: int) -> torch.Tensor:
    """G g G^T in float64, ((tile + 2)^2, in_channels, out_channels)."""
    g = torch.tensor(FILTER_TRANSFORMS[tile], dtype=torch.float64)
    return torch.einsum("ij,ocjk,lk->ilco", g, weight.double(), g).reshape(-1, weight.shape[1], weight.shape[0])


@pytest.mark.parametrize("in_channels", [48, 56], ids=["whole-groups", "a-partial-group"])
@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("layout", ["contiguous", "channels-last", "transposed view"])
def test_weight_transform_is_g_g_gt_in_the_kernels_blocks(layout, tile, in_channels):
    """Made in C in float32 on every call; any strides are read in place, input channels gathered 16 at a time."""
    generator = torch.Generator().manual_seed(11)
    block = winograd.kernel().out_channel_multiple
    weight = torch.randn(2 * block, in_channels, 3, 3, generator=generator)
    if layout == "channels-last":
        weight = weight.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed view":
        weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
    got = winograd.transform_weight(weight, tile=tile)
    points = (tile + 2) ** 2
    assert got.shape == (points, 2, in_channels, block) and got.is_contiguous()
    unblocked = got.permute(0, 2, 1, 3).reshape(points, in_channels, 2 * block)
    expected = g_g_gt(weight, tile)
    assert float((unblocked.double() - expected).abs().max()) <= 1e-6 * float(expected.abs().max())


def test_the_larger_tile_is_used_where_it_pays(monkeypatch):
    """6 x 6 output tiles on large images with few channels, 4 x 4 elsewhere (measured faster there)."""
    tiles = []
    transform = winograd.transform_weight

    def spy(weight, loaded, tile):
        tiles.append(tile)
        return transform(weight, loaded, tile)

    monkeypatch.setattr(winograd, "transform_weight", spy)
    side = round(winograd.LARGE_TILE_PIXELS**0.5)
    channels = winograd.LARGE_TILE_CHANNELS
    out_channels = winograd.kernel().out_channel_multiple  # 16 on AVX2, 64 on AVX-512
    with torch.inference_mode():
        for in_channels, height in [(channels, side), (channels, side - 1), (2 * channels, side)]:
            winograd.conv3x3(torch.zeros(1, in_channels, height, side), torch.zeros(out_channels, in_channels, 3, 3))
    assert tiles == [6, 4, 4]


def record_conv_flag(monkeypatch, name: str) -> list[bool]:
    """A spy on the kernel's winograd_conv3x3: the flag ``name`` ("shared" or "stream") of each call, in order."""
    position = {"shared": -5, "stream": -4}[name]  # (..., tile, shared, stream, moments, threads, workspace)
    loaded = winograd.kernel()
    recorded: list[bool] = []
    conv = loaded.conv

    def spy(*arguments):
        recorded.append(bool(arguments[position]))
        return conv(*arguments)

    monkeypatch.setattr(loaded, "conv", spy)
    return recorded


def test_the_shared_schedule_is_used_for_large_transformed_weights(monkeypatch):
    """Layers whose transformed weights reach SHARED_SCHEDULE_BYTES (512 -> 256 channels and up) share one
    group of tiles between the threads; smaller ones keep per-thread blocks (measured faster there)."""
    schedules = record_conv_flag(monkeypatch, "shared")
    block = winograd.kernel().out_channel_multiple
    big = math.ceil((winograd.SHARED_SCHEDULE_BYTES / (36 * 4)) ** 0.5 / block) * block  # in = out, 4 x 4 tiles
    assert winograd.transformed_bytes(4, big, big) >= winograd.SHARED_SCHEDULE_BYTES
    assert winograd.transformed_bytes(4, big - block, big - block) < winograd.SHARED_SCHEDULE_BYTES
    with torch.inference_mode():
        for channels in (big, big - block):
            winograd.conv3x3(torch.zeros(1, channels, SIDE, SIDE), torch.zeros(channels, channels, 3, 3))
    assert schedules == [True, False]


@pytest.mark.parametrize("shared", [False, True], ids=["per-thread-blocks", "shared-schedule"])
@pytest.mark.parametrize("fused", ["bias+residual", "all"])
def test_streaming_stores_write_the_same_output(fused, shared):
    """Outputs larger than the L3 cache go straight to memory; the values are those of ordinary stores, bit for bit,
    with partial tiles, a batch of 2 and the statistics gathered on the way."""
    generator = torch.Generator().manual_seed(21)
    batch, in_channels, side = 2, 64, 43
    out_channels = 2 * winograd.kernel().out_channel_multiple
    x = torch.randn(batch, in_channels, side, side, generator=generator)
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) / 24
    bias = torch.randn(out_channels, generator=generator)
    norm = random_norm(in_channels, generator) if fused == "all" else None
    upsample = fused == "all"
    residual = torch.randn(batch, out_channels, side * (1 + upsample), side * (1 + upsample), generator=generator)
    results = []
    with torch.inference_mode():
        for stream in (False, True):
            moments = winograd.new_moments(batch, out_channels)
            got = winograd.conv3x3(
                x, weight, bias, residual, norm=norm, upsample=upsample, shared=shared, stream=stream, output_moments=moments
            )
            results.append((got.clone(), moments))
    (ordinary, ordinary_moments), (streamed, streamed_moments) = results
    assert torch.equal(streamed, ordinary)
    assert torch.equal(streamed_moments, ordinary_moments)
    assert_float32_close(streamed, reference(x, weight, bias, residual, norm, upsample))


def test_outputs_larger_than_the_last_level_cache_are_streamed(monkeypatch):
    """By default the output is streamed from the last-level cache's size on, not below."""
    streamed = record_conv_flag(monkeypatch, "stream")
    channels = winograd.kernel().out_channel_multiple
    monkeypatch.setattr(winograd, "last_level_cache_bytes", lambda: channels * 4 * 32 * 32)
    with torch.inference_mode():
        for side in (32, 31):
            winograd.conv3x3(torch.zeros(1, 16, side, side), torch.zeros(channels, 16, 3, 3))
    assert streamed == [True, False]


def test_streaming_into_an_unaligned_output_falls_back_to_ordinary_stores():
    """Streaming stores need outputs aligned to the vector; the kernel checks, whatever its caller asks."""
    loaded = winograd.kernel()
    generator = torch.Generator().manual_seed(5)
    channels, side = loaded.out_channel_multiple, 20
    x = torch.randn(1, 32, side, side, generator=generator)
    weight = torch.randn(channels, 32, 3, 3, generator=generator) / 20
    transformed = winograd.transform_weight(weight, loaded, 4)
    inputs = x.permute(0, 2, 3, 1).contiguous()
    room = torch.empty(side * side * channels + 1)
    out = room[1:]  # 4 bytes past an aligned start
    floats = loaded.workspace_floats(1, side, side, 32, channels, 4, 0, 2)
    workspace = torch.empty(floats)
    status = loaded.conv(
        inputs.data_ptr(), 1, side, side, 32, 0, 0, None, None, transformed.data_ptr(), channels,
        None, None, out.data_ptr(), 4, 0, 1, None, 2, workspace.data_ptr(),
    )  # fmt: skip
    assert status == 0
    assert_float32_close(out.view(1, side, side, channels).permute(0, 3, 1, 2), reference(x, weight, None))


@pytest.mark.parametrize(
    ("batch", "channels", "height", "width", "tile", "shared", "threads"),
    [
        (1, 64, 37, 41, 4, False, 1),
        (2, 64, 30, 26, 6, False, 3),
        (1, 256, 24, 20, 4, True, 2),
        (3, 128, 13, 9, 4, True, 3),
        # 4 MiB of transformed weights: where L2 holds 2 MiB, blocks of 24 tiles, the last one partial.
        (1, 128, 64, 58, 6, False, 2),
    ],
)
def test_the_workspace_the_kernel_asks_for_is_enough(batch, channels, height, width, tile, shared, threads):
    """winograd_conv3x3 works in the caller's workspace of winograd_workspace_floats floats: exactly that
    many, with a guard past its end that must stay untouched, and the result still right."""
    loaded = winograd.kernel()
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, generator=generator) / (3 * channels**0.5)
    bias = torch.randn(channels, generator=generator)
    floats = loaded.workspace_floats(batch, height, width, channels, channels, tile, int(shared), threads)
    guard = 4096
    workspace = torch.empty(floats + guard)
    workspace[floats:] = 12345.0
    transformed = winograd.transform_weight(weight, loaded, tile)
    inputs = x.permute(0, 2, 3, 1).contiguous()
    out = torch.empty(batch, height, width, channels)
    status = loaded.conv(
        inputs.data_ptr(), batch, height, width, channels, 0, 0, None, None, transformed.data_ptr(), channels,
        bias.data_ptr(), None, out.data_ptr(), tile, int(shared), 0, None, threads, workspace.data_ptr(),
    )  # fmt: skip
    assert status == 0
    assert bool((workspace[floats:] == 12345.0).all())
    assert_float32_close(out.permute(0, 3, 1, 2), reference(x, weight, bias), tile)


def _l2_bytes() -> int:
    """cpu0's L2 size from sysfs (what glibc's sysconf also reports on Linux), 0 where it is not listed."""
    listed = Path("/sys/devices/system/cpu/cpu0/cache/index2/size")
    if not listed.exists():
        return 0
    text = listed.read_text().strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
    return int(text.rstrip("KM")) * scale


@pytest.mark.skipif(_l2_bytes() < (2 << 20), reason="the blocks grow only where L2 holds 2 MiB or more")
def test_blocks_grow_where_the_weights_and_a_block_do_not_fit_in_l2_together():
    """Each block streams all of the layer's transformed weights past its tiles; where they do not stay in L2
    beside the block, a block of up to 3/4 of L2 reads them fewer times (1.36x faster at 128 channels, 256 px,
    on a Xeon with 2 MiB L2); where they do (64 channels, F(6): 1 MiB), the block keeps its 512 KiB."""
    loaded = winograd.kernel()
    fitting = 4 * loaded.workspace_floats(1, 512, 512, 64, 64, 6, 0, 1)  # the block plus one strip of input rows
    streamed = 4 * loaded.workspace_floats(1, 256, 256, 128, 128, 6, 0, 1)  # 4 MiB of transformed weights
    assert fitting < 768 << 10
    assert streamed > _l2_bytes() // 2


@pytest.mark.skipif(_l2_bytes() >= (2 << 20), reason="here the blocks grow (the test above)")
def test_blocks_keep_their_size_where_l2_is_smaller_than_2_mib():
    """On a 1 MiB L2 (AMD's Zen 4) blocks of 3/4 of it were no faster than 512 KiB: the block plus one strip of
    input rows stays under 768 KiB even where the transformed weights (4 MiB here) come from L3."""
    loaded = winograd.kernel()
    streamed = 4 * loaded.workspace_floats(1, 256, 256, 128, 128, 6, 0, 1)
    assert streamed < 768 << 10


@pytest.mark.skipif(sys.platform != "linux", reason="minor page faults are counted on Linux")
@pytest.mark.parametrize(("in_channels", "side", "shared"), [(256, 64, False), (512, 32, True)])
def test_repeated_layers_take_no_fresh_memory_from_the_system(in_channels, side, shared):
    """The working buffers come from the recycled pool: a 256-channel layer at 64 px (then in the shared schedule)
    took about 2,400 page faults per call from malloc's fresh mappings (about 30 % of its time in a VM); now none,
    in either schedule."""
    import resource

    x = torch.randn(1, in_channels, side, side).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(256, in_channels, 3, 3) / 48
    assert winograd.uses_shared_schedule(4, in_channels, 256) is shared
    with torch.inference_mode():
        winograd.conv3x3(x, weight)  # the pool's buffers are made here
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            winograd.conv3x3(x, weight)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 300, f"{faults} page faults in 3 calls"


def test_group_norm_statistics_survive_a_large_offset():
    """mean 300, std 1: float32 sums of squares would get the std wrong by 1e-4 (measured), ours are shifted."""
    generator = torch.Generator().manual_seed(5)
    x = 300 + torch.randn(1, 32, 40, 40, generator=generator)
    norm = random_norm(32, generator)
    weight = torch.randn(64, 32, 3, 3, generator=generator) / 17
    with torch.inference_mode():
        got = winograd.conv3x3(x, weight, None, norm=norm)
    assert_float32_close(got, reference(x, weight, None, norm=norm))


@pytest.mark.parametrize("shared", [False, True], ids=["per-thread-blocks", "shared-schedule"])
@pytest.mark.parametrize("upsample", [False, True], ids=["plain", "upsampled"])
def test_output_moments_are_the_outputs_statistics(shared, upsample, monkeypatch):
    """Gathered while the output is written, by two threads whose shares split an image (so their sums about
    different shifts are combined), over partial tiles and 3 images of different offsets: the mean and variance
    of each image's channels as float64 takes them, also about a large mean."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    generator = torch.Generator().manual_seed(11)
    block = winograd.kernel().out_channel_multiple
    side = 23 if upsample else 46  # 12 x 12 tiles of 4 per image: per-thread blocks of 108 tiles end inside an image
    x = torch.randn(3, 32, side, side + 1, generator=generator)
    weight = torch.randn(2 * block, 32, 3, 3, generator=generator) / 17
    bias = torch.randn(2 * block, generator=generator)
    bias[: block // 2] += 300  # means of 300 with a spread of about 1
    size = side * (1 + upsample)
    residual = torch.randn(3, 2 * block, size, size + 1 + upsample, generator=generator)
    residual[1] *= 10
    moments = winograd.new_moments(3, 2 * block)
    with torch.inference_mode():
        out = winograd.conv3x3(x, weight, bias, residual, upsample=upsample, tile=4, shared=shared, output_moments=moments)
    pixels = out.shape[2] * out.shape[3]
    shifted_sum, shifted_squares, shift = moments
    mean = shift + shifted_sum / pixels
    variance = (shifted_squares - shifted_sum.square() / pixels) / pixels
    expected = out.double()
    torch.testing.assert_close(mean, expected.mean((2, 3)), rtol=0, atol=1e-5 * float(expected.abs().max()))
    torch.testing.assert_close(variance, expected.var((2, 3), unbiased=False), rtol=1e-5, atol=0)


def test_given_moments_stand_for_the_norms_own_pass(monkeypatch):
    """A convolution's output_moments, handed to the next one's norm, give what its own pass over the input gives."""
    generator = torch.Generator().manual_seed(12)
    block = winograd.kernel().out_channel_multiple
    x = torch.randn(1, 32, 40, 40, generator=generator)
    first = torch.randn(2 * block, 32, 3, 3, generator=generator) / 17
    second = torch.randn(block, 2 * block, 3, 3, generator=generator) / 17
    norm = random_norm(2 * block, generator)
    moments = winograd.new_moments(1, 2 * block)
    with torch.inference_mode():
        h = winograd.conv3x3(x, first, torch.randn(2 * block, generator=generator) + 50, output_moments=moments)
        own = winograd.conv3x3(h, second, norm=norm)
        passes = []
        loaded = winograd.kernel()
        monkeypatch.setattr(loaded, "moments", lambda *arguments: passes.append(arguments) or 1)  # would fail
        given = winograd.conv3x3(h, second, norm=norm, input_moments=moments)
    assert passes == []
    torch.testing.assert_close(given, own, rtol=0, atol=1e-5 * float(own.abs().max()))


def test_moments_of_the_wrong_shape_are_refused():
    x = torch.zeros(2, 32, SIDE, SIDE)
    weight = torch.zeros(winograd.kernel().out_channel_multiple, 32, 3, 3)
    norm = nn.GroupNorm(8, 32)
    with pytest.raises(ValueError, match="input_moments"):
        winograd.conv3x3(x, weight, norm=norm, input_moments=winograd.new_moments(1, 32))
    with pytest.raises(ValueError, match="output_moments"):
        winograd.conv3x3(x, weight, output_moments=winograd.new_moments(2, 32).float())


@pytest.mark.parametrize("affine", [True, False], ids=["with-parameters", "without-parameters"])
def test_batch_items_are_normalised_separately(affine):
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 32, 33, 33, generator=generator)
    x[1] = x[1] * 10 + 5
    norm = random_norm(32, generator) if affine else nn.GroupNorm(8, 32, affine=False)
    weight = torch.randn(64, 32, 3, 3, generator=generator) / 17
    with torch.inference_mode():
        got = winograd.conv3x3(x, weight, None, norm=norm)
    assert_float32_close(got, reference(x, weight, None, norm=norm))


def conv_module(in_channels=32, out_channels=64, seed=8) -> FastConv3x3:
    torch.manual_seed(seed)
    return FastConv3x3(in_channels, out_channels)


@pytest.mark.parametrize(
    ("case", "make_input"),
    [
        ("float64", lambda: torch.randn(1, 32, SIDE, SIDE, dtype=torch.float64)),
        ("below the size that pays", lambda: torch.randn(1, 32, SIDE // 2, SIDE)),
        ("channels not a multiple of 16", lambda: torch.randn(1, 24, SIDE, SIDE)),
        ("autograd", lambda: torch.randn(1, 32, SIDE, SIDE, requires_grad=True)),
    ],
)
def test_falls_back_to_pytorch_where_the_kernel_does_not_apply(case, make_input):
    module = conv_module(in_channels=make_input().shape[1])
    x = make_input()
    module = module.to(x.dtype)
    assert not winograd.applies(x, module.weight), case
    assert winograd.applies(torch.randn(1, 32, SIDE, SIDE), conv_module().weight.detach())  # minus the reason
    out = module(x)
    torch.testing.assert_close(out, F.conv2d(x, module.weight, module.bias, padding=1))


def test_autocast_keeps_its_precision():
    module = conv_module()
    x = torch.randn(1, 32, SIDE, SIDE)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not winograd.applies(x, module.weight)
        assert module(x).dtype == torch.bfloat16


def test_gradients_flow_through_the_fallback():
    module = conv_module()
    x = torch.randn(1, 32, SIDE, SIDE, requires_grad=True)
    module(x).square().sum().backward()
    assert x.grad is not None and module.weight.grad is not None


def test_a_residual_that_needs_gradients_keeps_them():
    """The kernel's result has no gradient: with a residual autograd tracks, PyTorch's convolution runs."""
    module = conv_module().requires_grad_(False)
    residual = torch.randn(1, 64, SIDE, SIDE, requires_grad=True)
    module(torch.randn(1, 32, SIDE, SIDE), residual).sum().backward()
    assert torch.equal(residual.grad, torch.ones_like(residual))


def test_the_kernel_follows_weight_changes():
    """Replaced weights, loaded state and in-place changes are all seen: nothing derived from them is kept."""
    module = conv_module()
    x = torch.randn(1, 32, SIDE, SIDE)
    with torch.inference_mode():
        before = module(x)
        module.load_state_dict({key: value * 2 for key, value in module.state_dict().items()})
        loaded = module(x)
        assert_float32_close(loaded, reference(x, module.weight, module.bias))
        module.weight = torch.nn.Parameter(torch.randn_like(module.weight))
        replaced = module(x)
        assert_float32_close(replaced, reference(x, module.weight, module.bias))
        module.weight.mul_(-1)
        changed_in_place = module(x)
        assert_float32_close(changed_in_place, reference(x, module.weight, module.bias))
    assert not torch.allclose(before, loaded) and not torch.allclose(loaded, replaced)


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("float64 input (returned NaN garbage)", {"x": lambda: torch.randn(1, 32, 8, 8, dtype=torch.float64)}),
        ("20 channels (read and wrote past the buffers)", {"x": lambda: torch.randn(1, 20, 8, 8)}),
        ("an empty image", {"x": lambda: torch.randn(1, 32, 0, 8)}),
        ("an input on another device", {"x": lambda: torch.randn(1, 32, 8, 8, device="meta")}),
        ("a 3-D input", {"x": lambda: torch.randn(32, 8, 8)}),
        ("float64 weights", {"weight": lambda: torch.zeros(64, 32, 3, 3, dtype=torch.float64)}),
        ("5x5 weights", {"weight": lambda: torch.zeros(64, 32, 5, 5)}),
        ("weights on another device", {"weight": lambda: torch.zeros(64, 32, 3, 3, device="meta")}),
        ("a float64 residual", {"residual": lambda: torch.zeros(1, 64, 8, 8, dtype=torch.float64)}),
        ("a bias on another device", {"bias": lambda: torch.zeros(64, device="meta")}),
        ("a GroupNorm that does not divide the channels", {"norm": lambda: nn.GroupNorm(5, 35)}),
    ],
)
def test_every_entry_point_checks_its_tensors_before_c_reads_them(case, change):
    call = {
        "x": lambda: torch.randn(1, 32, 8, 8),
        "weight": lambda: torch.zeros(64, 32, 3, 3),
        "bias": lambda: None,
        "residual": lambda: None,
        "norm": lambda: None,
    }
    call |= change
    given = {key: make() for key, make in call.items()}
    with pytest.raises(ValueError), torch.inference_mode():
        winograd.conv3x3(given["x"], given["weight"], given["bias"], given["residual"], norm=given["norm"])


def test_switching_off_gives_pytorch_convolutions():
    module = conv_module()
    x = torch.randn(1, 32, SIDE, SIDE)
    with torch.inference_mode():
        module.use_winograd = False
        direct = module(x)
        module.use_winograd = True
        fast = module(x)
    assert torch.equal(direct, F.conv2d(x, module.weight, module.bias, padding=1))
    assert_float32_close(fast, direct.double())
    assert not torch.equal(fast, direct)  # really another computation


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def with_source(source: Path) -> str:
    """Child-process code that builds the kernel from ``source`` instead of the project's."""
    imports = "import pathlib\nfrom lib_codeformer.acceleration import kernel_build\n"
    return f"{imports}kernel_build.SOURCE = pathlib.Path({str(source)!r})\n"


CHECK = """
import logging, torch
logging.basicConfig(level=logging.INFO, format="%(message)s")
from lib_codeformer.acceleration import winograd
from lib_codeformer.acceleration.layers import FastConv3x3
x = torch.randn(1, 32, 128, 128)
module = FastConv3x3(32, 64)
with torch.inference_mode():
    out = module(x)
expected = torch.nn.functional.conv2d(x, module.weight, module.bias, padding=1)
print("available", winograd.available(), "close", bool((out - expected).abs().max() < 1e-4))
"""


def test_without_a_compiler_everything_runs_on_pytorch(tmp_path):
    result = run_python(CHECK, CC=str(tmp_path / "no-such-compiler"), PATH=str(tmp_path), CODEFORMER_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False close True" in result.stdout
    assert "no C compiler found" in result.stderr


def test_a_failing_build_is_reported_and_falls_back(tmp_path):
    compiler = tmp_path / "broken-cc"
    script = ["#!/bin/sh", "echo 'broken-cc 1.0'", '[ "$1" = --version ] && exit 0']
    script += ["echo 'internal compiler error' >&2", "exit 1"]
    compiler.write_text("\n".join(script) + "\n")
    compiler.chmod(0o755)
    result = run_python(CHECK, CC=str(compiler), CODEFORMER_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False close True" in result.stdout
    assert "internal compiler error" in result.stderr
    assert not list((tmp_path / "kernels").iterdir())  # nothing half-built left behind


def test_switched_off_by_environment(tmp_path):
    """CODEFORMER_FAST_CONV=0 wins over a module's use_winograd (which the WebUI setting and the CLI set)."""
    result = run_python(CHECK, CODEFORMER_FAST_CONV="0", CODEFORMER_CACHE=str(tmp_path))
    assert "available False close True" in result.stdout
    assert not (tmp_path / "kernels").exists()  # not even built


def test_built_once_then_reused_from_the_cache(tmp_path):
    first = run_python(CHECK, CODEFORMER_CACHE=str(tmp_path))
    assert "available True close True" in first.stdout, first.stderr
    assert "Built the fast convolution kernel" in first.stderr
    (library,) = (tmp_path / "kernels").glob("winograd-*/winograd.so")
    built_at = library.stat().st_mtime_ns
    second = run_python(CHECK, CODEFORMER_CACHE=str(tmp_path))
    assert "available True close True" in second.stdout
    assert "Built the fast convolution kernel" not in second.stderr
    assert library.stat().st_mtime_ns == built_at


@pytest.mark.parametrize(
    "mistake",
    [
        ("out[0] = m[0] + m[1] + m[2] + m[3] + m[4];", "out[0] = m[0] + m[1] + m[2] + m[3];"),  # in 4 x 4 tiles
        ("out[2] = sum1 + 4.0f * sum2 + 0.25f * sum3;", "out[2] = sum1 + 4.0f * sum2 + 0.5f * sum3;"),  # in 6 x 6 tiles
        ("if (residual) acc[r][v] += load(residual + at);", "if (residual) acc[r][v] -= load(residual + at);"),  # 1x1
    ],
    ids=["tile-4", "tile-6", "pointwise"],
)
def test_a_kernel_that_computes_wrong_results_is_not_used(tmp_path, mistake):
    """The self-test runs on every load, over both tile sizes and the 1x1 convolution: a library that builds but
    miscomputes is refused."""
    broken = tmp_path / "winograd.c"
    source = winograd.SOURCE.read_text()
    assert mistake[0] in source
    broken.write_text(source.replace(*mistake))
    code = with_source(broken)
    code += CHECK
    result = run_python(code, CODEFORMER_CACHE=str(tmp_path))
    assert "available False close True" in result.stdout, result.stderr
    assert "self-test differs" in result.stderr


@pytest.mark.parametrize(
    ("case", "arguments"),
    [
        ("weights for other channels", {"weight": torch.zeros(64, 16, 3, 3)}),
        ("output channels not in the kernel's blocks", {"weight": torch.zeros(60, 32, 3, 3)}),
        ("weights that are not 4-D", {"weight": torch.zeros(36, 32, 64)}),
        ("bias of the wrong size", {"bias": torch.zeros(32)}),
        ("residual of the wrong size", {"residual": torch.zeros(1, 64, 16, 16)}),
        ("norm over other channels", {"norm": nn.GroupNorm(8, 64)}),
    ],
)
def test_sizes_are_checked_before_the_kernel_reads_memory(case, arguments):
    call = {"weight": torch.zeros(64, 32, 3, 3), "bias": None, "residual": None, "norm": None}
    call |= arguments
    x = torch.zeros(1, 32, 32, 32)
    with pytest.raises(ValueError), torch.inference_mode():
        winograd.conv3x3(x, call["weight"], call["bias"], call["residual"], norm=call["norm"])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc"), reason="x86-64 builds need gcc")
@pytest.mark.parametrize(
    ("target", "vector_floats"),
    [("-march=x86-64-v4", 16), ("-march=x86-64-v3", 8), ("-march=x86-64", 4)],
    ids=["avx512", "avx2", "sse2-generic"],
)
def test_every_vector_width_computes_the_same(tmp_path, target, vector_floats):
    """-march=native picks one code path; the other CPUs' paths (AVX2, plain SSE2) are built and checked here too.

    Only run where this CPU can execute them (AVX-512 code needs an AVX-512 CPU).
    """
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if vector_floats == 16 and " avx512f" not in flags:
        pytest.skip("this CPU has no AVX-512")
    if vector_floats == 8 and " avx2" not in flags:
        pytest.skip("this CPU has no AVX2")
    library = tmp_path / "winograd.so"
    subprocess.run(kernel_build.compile_command("gcc", ["-O3", target], library), check=True)
    kernel = winograd.Kernel(ctypes.CDLL(str(library)))
    assert kernel.vector_floats == vector_floats
    assert kernel.out_channel_multiple == vector_floats * (2 if vector_floats == 8 else 4)
    assert winograd.self_test(kernel) == ""
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(2, 48, 19, 22, generator=generator)
    weight = torch.randn(64, 48, 3, 3, generator=generator) / 20
    bias = torch.randn(64, generator=generator)
    norm = random_norm(48, generator)
    with torch.inference_mode():
        for tile in winograd.TILES:
            for shared, stream in [(False, False), (False, True), (True, False), (True, True)]:
                got = winograd.run(kernel, x, weight, bias, None, norm, False, tile, shared, stream)
                assert_float32_close(got, reference(x, weight, bias, norm=norm), tile)


def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path):
    first = run_python(CHECK, CODEFORMER_CACHE=str(tmp_path))
    assert "available True" in first.stdout, first.stderr
    (library,) = (tmp_path / "kernels").glob("winograd-*/winograd.so")
    library.write_bytes(library.read_bytes()[:1000])  # truncated: loading it would kill the process (SIGBUS)
    second = run_python(CHECK, CODEFORMER_CACHE=str(tmp_path))
    assert "available True close True" in second.stdout, second.stderr
    assert "Rebuilding" in second.stderr
    assert library.stat().st_size > 1000


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc"), reason="x86-64 builds need gcc")
def test_a_build_without_avx2_is_not_used(tmp_path):
    """Only the AVX2 and AVX-512 builds were measured faster than PyTorch; a 4-float build is left unused."""
    compiler = tmp_path / "sse2-cc"
    compiler.write_text('#!/bin/sh\nexec gcc "$@" -march=x86-64\n')  # the last -march wins
    compiler.chmod(0o755)
    result = run_python(CHECK, CC=str(compiler), CODEFORMER_CACHE=str(tmp_path))
    assert "available False close True" in result.stdout, result.stderr
    assert "no AVX2 or AVX-512" in result.stderr


def test_a_kernel_that_crashes_is_tested_in_a_child_and_never_loaded(tmp_path):
    """A miscompiled or illegal-instruction build must not take the host (a WebUI) down with it."""
    broken = tmp_path / "winograd.c"
    source = winograd.SOURCE.read_text()
    marker = "    const plan_t plan = plan_layer(&base, shared, threads);"
    assert marker in source
    broken.write_text(source.replace(marker, marker + "\n    __builtin_trap();"))
    code = with_source(broken)
    code += CHECK
    first = run_python(code, CODEFORMER_CACHE=str(tmp_path))
    assert first.returncode == 0, first.stderr  # this process lived; the child that ran the build crashed
    assert "available False close True" in first.stdout
    assert "crashed the process" in first.stderr
    (verdict,) = (tmp_path / "kernels").glob("winograd-*/verdict.json")
    second = run_python(code, CODEFORMER_CACHE=str(tmp_path))
    assert "available False close True" in second.stdout and "crashed the process" in second.stderr
    assert "Built the fast convolution kernel" not in second.stderr  # not built, tested or loaded again
    assert verdict.exists()


def test_a_compiler_with_arguments(tmp_path):
    """CC="ccache gcc" is how build tools take a compiler with a wrapper; it was silently ignored."""
    result = run_python(CHECK, CC="env gcc", CODEFORMER_CACHE=str(tmp_path))
    assert "available True close True" in result.stdout, result.stderr


def test_two_processes_building_at_once_publish_one_build_and_leave_nothing(tmp_path):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    leftover = kernels / f".winograd-0123.codeformer-{int(dead)}-abc.part"  # what a killed build leaves
    leftover.mkdir()
    (leftover / "winograd.so").write_bytes(b"half")
    command = [sys.executable, "-c", CHECK]
    environment = {**os.environ, "CODEFORMER_CACHE": str(tmp_path)}
    builds = [subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    builds.append(subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [build.communicate(timeout=300) for build in builds]
    assert all("available True close True" in out for out, _ in outputs), outputs
    assert [path.name for path in kernels.iterdir() if is_temporary(path)] == []
    (published,) = [path for path in kernels.iterdir() if path.is_dir()]
    assert sorted(path.name for path in published.iterdir()) == ["verdict.json", "winograd.so"]
    again = run_python(CHECK, CODEFORMER_CACHE=str(tmp_path))
    assert "Built the fast convolution kernel" not in again.stderr and "Rebuilding" not in again.stderr


def test_cpu_family_names_the_widest_vector_extension():
    assert cpu_family({"sse2", "avx", "avx2", "avx512f", "avx512bw"}) == "AVX-512"
    assert cpu_family({"sse2", "avx", "avx2", "fma"}) == "AVX2"
    assert cpu_family({"sse2", "avx"}) == platform.machine()
    assert cpu_family(set()) == platform.machine()


class ReflectingConv(nn.Conv2d):
    """A subclass may compute something else than its base class: never taken for a plain convolution."""


@pytest.mark.parametrize(
    ("conv", "taken"),
    [
        (nn.Conv2d(16, 16, 3, padding=1), True),
        (nn.Conv2d(16, 16, 3, padding=1, bias=False), True),
        (nn.Conv2d(16, 16, 3, padding=2, dilation=2), False),
        (nn.Conv2d(16, 16, 3, padding=1, stride=2), False),
        (nn.Conv2d(16, 16, 3, padding=1, groups=16), False),
        (nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"), False),
        (nn.Conv2d(16, 16, 3, padding=0), False),
        (nn.Conv2d(16, 16, 1), False),
        (ReflectingConv(16, 16, 3, padding=1), False),
    ],
)
def test_accelerate_takes_over_only_the_convolution_the_kernel_computes(conv, taken):
    from lib_codeformer.acceleration import accelerate

    fast = accelerate(nn.Sequential(conv).eval())
    assert isinstance(fast[0], FastConv3x3) is taken
    x = torch.randn(1, 16, 40, 40)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-4, atol=1e-4)
    if not taken:
        with pytest.raises(ValueError, match="not a plain 3x3 convolution"):
            FastConv3x3.adopt(conv, use_winograd=True)
