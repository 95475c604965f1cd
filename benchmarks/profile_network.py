"""Where one pass of the network spends its time, and how close the Winograd kernel's products come to the CPU's peak.

Per layer kind (3x3 convolutions on the kernel by shape, 3x3 on PyTorch, other
convolutions, GroupNorm, the transformer, the rest) the exclusive time of one
pass (a module's time minus its children's), its share of the pass, and for
the kernel's convolutions the multiply-adds its products stage does
(Winograd F(m x m, 3 x 3): (m + 2)^2 products per tile per channel pair) per
second against the machine's peak: float32 FMA lanes per second measured
with every core busy (``clock_probe.py``: independent FMAs at the widest
vectors the compiler targets here, as the kernel's build), because cores
differ in their FMA pipes (16 lanes per cycle on AVX2 cores with two 256-bit
pipes, 32 on Xeons with two 512-bit ones) and wide vectors may run at a
lower clock. Given ``--ghz`` or ``--fma-per-cycle``, the peak is cores x
clock x lanes per cycle instead (clock measured by the same probe, else
/proc/cpuinfo's; 16 lanes unless given). The same figure is the "fraction
of peak" column of ``bench_network.py``.

``--model parsenet`` profiles the ParseNet mask of the like-for-like path
instead (facexlib's network in its fast form, synthetic weights): where its
time goes, and the rate of its PyTorch convolutions (the stride-2 ones,
which stay direct) against the same peak. Both end with the floor the
arithmetic sets: the kernel's products at that peak plus the time
outside the kernel.

    python benchmarks/profile_network.py [--model codeformer] [--batch 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clock_probe import listed_clock_ghz, measured_clock_ghz, measured_fma_per_second  # noqa: E402

from lib_codeformer import accelerate, load_codeformer  # noqa: E402
from lib_codeformer.acceleration import winograd  # noqa: E402
from lib_codeformer.acceleration.layers import FastConv1x1, FastConv3x3, FastResnetBlock  # noqa: E402
from lib_codeformer.faces.parsenet_fast import FastParseBlock, FastParseConv, accelerate_parsenet  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402
from lib_codeformer.testing.machine import cpu_family  # noqa: E402

FIDELITY = 0.5


def machine_peak(cores: int, ghz: float | None = None, fma_per_cycle: int | None = None) -> tuple[float, str]:
    """float32 FMA lanes per second of ``cores`` cores, and how that figure was found.

    Measured where neither ``ghz`` nor ``fma_per_cycle`` is given and a C
    compiler is at hand; else cores x clock x lanes per cycle.
    """
    if ghz is None and fma_per_cycle is None:
        measured = measured_fma_per_second(cores)
        if measured:
            return measured, f"measured with {cores} cores busy"
    lanes = fma_per_cycle or 16
    clock, source = cores_clock(cores, ghz)
    return clock * 1e9 * lanes * cores, f"{cores} cores x {clock:.2f} GHz ({source}) x {lanes} lanes per cycle"


def cores_clock(cores: int, given: float | None = None) -> tuple[float, str]:
    """The clock a computed peak is figured from, in GHz, and where it came from."""
    if given:
        return given, "given"
    measured = measured_clock_ghz(cores)
    if measured:
        return measured, f"measured with {cores} cores busy"
    listed = listed_clock_ghz()
    return (listed, "/proc/cpuinfo") if listed else (3.0, "assumed")


def tile_of(height: int, width: int, in_channels: int) -> int:
    """The tile ``winograd.run`` chooses (its rule, repeated here to count products)."""
    return 6 if height * width >= winograd.LARGE_TILE_PIXELS and in_channels <= winograd.LARGE_TILE_CHANNELS else 4


@contextmanager
def counting_kernel(record: list[tuple[float, int, int, str]]):
    """Every kernel call timed: (seconds, Winograd products, direct multiply-adds, shape) appended to ``record``."""
    original = winograd.run

    def run(loaded, x, weight, bias, residual, norm, upsample, tile=None, shared=None, stream=None, **moments):
        batch, in_channels, height, width = x.shape
        if upsample:
            height, width = 2 * height, 2 * width
        out_channels = weight.shape[0]
        chosen = tile or tile_of(height, width, in_channels)
        tiles = math.ceil(height / chosen) * math.ceil(width / chosen)
        products = batch * tiles * (chosen + 2) ** 2 * in_channels * out_channels
        direct = batch * height * width * in_channels * out_channels * 9
        started = time.perf_counter()
        result = original(loaded, x, weight, bias, residual, norm, upsample, tile, shared, stream, **moments)
        if shared is None:
            shared = winograd.uses_shared_schedule(chosen, in_channels, out_channels)
        shape = f"{in_channels}->{out_channels} @{height}x{width} F({chosen})" + (" up" if upsample else "")
        shape += " shared" if shared else ""
        record.append((time.perf_counter() - started, products, direct, shape))
        return result

    winograd.run = run
    try:
        yield
    finally:
        winograd.run = original


def kernel_rate(run: Callable[[], object]) -> tuple[float, float]:
    """(products per second in the kernel's calls, share of the pass inside them) for one run of ``run``."""
    record: list[tuple[float, int, int, str]] = []
    started = time.perf_counter()
    with counting_kernel(record):
        run()
    total = time.perf_counter() - started
    seconds = sum(entry[0] for entry in record)
    return (sum(entry[1] for entry in record) / seconds if seconds else 0.0), seconds / total


def kind_of(module: nn.Module, name: str) -> str:
    # A residual block's own work is its first convolution (``forward_with_moments``, not a module call).
    if isinstance(module, (FastConv3x3, FastResnetBlock)):
        return "3x3 conv, fused (Winograd kernel where it applies)"
    if isinstance(module, FastConv1x1):
        return "1x1 conv + residual (kernel's products where it applies)"
    if isinstance(module, nn.Conv2d):
        return f"conv {module.kernel_size[0]}x{module.kernel_size[1]}, stride {module.stride[0]} (PyTorch)"
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
        return type(module).__name__
    if isinstance(module, (FastParseConv, FastParseBlock)):
        return "ParseNet layers' reflection padding, upsampling, residual"
    if isinstance(module, nn.LeakyReLU):
        return "LeakyReLU"
    if "ft_layers" in name or isinstance(module, (nn.MultiheadAttention, nn.Linear)):
        return "transformer (attention, feed-forward)"
    return type(module).__name__


def profile(model: nn.Module, run: Callable[[], object], repeats: int) -> tuple[dict[str, float], float]:
    """Exclusive seconds per kind in the median of ``repeats`` passes of ``run``, and that pass's time.

    One pass's figures, not each kind's median over passes: so that they add up to its time."""
    stack: list[list[float]] = []
    handles = []
    kinds = {module: kind_of(module, name) for name, module in model.named_modules() if module is not model}

    def before(module, inputs):
        stack.append([time.perf_counter(), 0.0])

    def after(module, inputs, output):
        started, children = stack.pop()
        elapsed = time.perf_counter() - started
        if stack:
            stack[-1][1] += elapsed
        current[kinds[module]] = current.get(kinds[module], 0.0) + elapsed - children

    for module in kinds:
        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    passes: list[tuple[float, dict[str, float]]] = []
    try:
        for _ in range(repeats):
            current: dict[str, float] = {}
            started = time.perf_counter()
            with torch.inference_mode():
                run()
            passes.append((time.perf_counter() - started, current))
    finally:
        for handle in handles:
            handle.remove()
    seconds, kinds_seconds = sorted(passes, key=lambda entry: entry[0])[len(passes) // 2]
    return kinds_seconds, seconds


def pytorch_conv_rates(model: nn.Module, run: Callable[[], object]) -> dict[str, list[float]]:
    """Per shape of the convolutions PyTorch computes (not the kernel's): [seconds, multiply-adds, calls] of one run."""
    by_shape: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    started: dict[nn.Module, float] = {}
    handles = []

    def before(module, inputs):
        started[module] = time.perf_counter()

    def after(module, inputs, output):
        seconds = time.perf_counter() - started.pop(module)
        kh, kw = module.kernel_size
        macs = output.numel() * module.in_channels // module.groups * kh * kw
        size = f"{output.shape[-2]}x{output.shape[-1]}"
        shape = f"{module.in_channels}->{module.out_channels} {kh}x{kw} stride {module.stride[0]} @{size}"
        entry = by_shape[shape]
        entry[0] += seconds
        entry[1] += macs
        entry[2] += 1

    for module in model.modules():
        if type(module) is nn.Conv2d:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with torch.inference_mode():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return by_shape


def parsenet_model() -> nn.Module:
    """facexlib's ParseNet (synthetic weights) in the fast form the parsing mask runs."""
    from facexlib.parsing.parsenet import ParseNet

    from lib_codeformer.network.synthetic import random_weights_like

    model = ParseNet(in_size=512, out_size=512, parsing_ch=19).eval()
    model.load_state_dict(random_weights_like(model, 2))
    return accelerate_parsenet(model.requires_grad_(False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("codeformer", "parsenet"), default="codeformer")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ghz", type=float, default=None, help="the cores' clock (default: the peak is measured)")
    parser.add_argument(
        "--fma-per-cycle", type=int, default=None, help="float32 FMA lanes per core and cycle (default: the peak is measured)"
    )
    args = parser.parse_args()
    x = torch.rand(args.batch, 3, 512, 512) * 2 - 1
    if args.model == "parsenet":
        model = parsenet_model()

        def run() -> object:
            return model(x)
    else:
        model = accelerate(load_codeformer(synthetic_state_dict(1234)))

        def run() -> object:
            return model(x, w=FIDELITY, adain=True)

    with torch.inference_mode():
        run()  # warm-up
    cores = torch.get_num_threads()
    peak, source = machine_peak(cores, args.ghz, args.fma_per_cycle)
    machine = f"{platform.processor() or platform.machine()} ({cpu_family()})"
    print(f"CPU: {machine}, {cores} threads, peak {peak / 1e9:.0f} G FMA/s ({source})")
    times, per_pass = profile(model, run, args.repeats)
    print(f"\n{args.model}, one pass, batch {args.batch}: {per_pass * 1000:.0f} ms (the median of {args.repeats}, with hooks)\n")
    print("| layer kind | ms per pass | share |")
    print("|---|---|---|")
    accounted = 0.0
    for kind, seconds in sorted(times.items(), key=lambda item: -item[1]):
        accounted += seconds
        print(f"| {kind} | {seconds * 1000:.1f} | {seconds / per_pass:.1%} |")
    print(f"| outside any module | {(per_pass - accounted) * 1000:.1f} | {(per_pass - accounted) / per_pass:.1%} |")
    record: list[tuple[float, int, int, str]] = []
    with counting_kernel(record), torch.inference_mode():
        run()
    by_shape: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for seconds, products, direct, shape in record:
        entry = by_shape[shape]
        entry[0] += seconds
        entry[1] += products
        entry[2] += direct
        entry[3] += 1
    print("\n| kernel call shape | calls | ms | G products/s | fraction of peak | direct-equivalent G MAC/s |")
    print("|---|---|---|---|---|---|")
    for shape, (seconds, products, direct, calls) in sorted(by_shape.items(), key=lambda item: -item[1][0]):
        rate = products / seconds
        figures = f"{seconds * 1000:.1f} | {rate / 1e9:.0f} | {rate / peak:.2f} | {direct / seconds / 1e9:.0f}"
        print(f"| {shape} | {calls:.0f} | {figures} |")
    seconds = sum(entry[0] for entry in record)
    products = sum(entry[1] for entry in record)
    rate = products / seconds if seconds else 0.0
    print(f"\nkernel: {seconds * 1000:.0f} ms of the pass, {rate / 1e9:.0f} G products/s = {rate / peak:.2f} of peak")
    convs = pytorch_conv_rates(model, run)
    if convs:
        print("\n| PyTorch convolution | calls | ms | G MAC | G MAC/s | fraction of peak |")
        print("|---|---|---|---|---|---|")
        for shape, (conv_seconds, macs, calls) in sorted(convs.items(), key=lambda item: -item[1][0]):
            print(
                f"| {shape} | {calls:.0f} | {conv_seconds * 1000:.1f} | {macs / 1e9:.2f} "
                f"| {macs / conv_seconds / 1e9:.0f} | {macs / conv_seconds / peak:.2f} |"
            )
    outside = per_pass - seconds
    print(
        f"\nfloor: the kernel's {products / 1e9:.1f} G products at the peak take {products / peak * 1000:.0f} ms; "
        f"with the {outside * 1000:.0f} ms outside the kernel as they are, a pass cannot go below "
        f"{(products / peak + outside) * 1000:.0f} ms (now {per_pass * 1000:.0f})"
    )


if __name__ == "__main__":
    main()
