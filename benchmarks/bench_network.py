"""Time the CodeFormer network against the implementation AUTOMATIC1111 uses.

The reference is spandrel-extra-arches' CodeFormer (what AUTOMATIC1111 1.10
loads), installed by the ``bench`` extra. Both get the same synthetic weights
and inputs, run in this one process, alternating, and the median of
``--repeats`` runs is reported as ms per face, with the ratio ours/reference
(< 1 is faster). Ours is timed twice per repeat: as the first face after an
idle spell (the recycled working memory given back, acceleration/buffers.py)
and as the next, consecutive face. On the CPU, our fp32 is timed with the
Winograd convolution kernel (the default where a C compiler is found) built
for this CPU, then built for each narrower CPU family this one can run (on
an AVX-512 CPU: the AVX2 build, the per-family rows), and with PyTorch's
convolutions only (what runs without a C compiler, and on ARM). Each of our
modes is also checked against the official network's golden outputs
(tests/data) to say whether it keeps the accuracy the tests demand. Peak
memory is the growth of the process's peak resident set (CPU, Linux) or of
the CUDA allocator's peak during one batch-1 pass. "Fraction of peak": the
Winograd kernel's products per second (benchmarks/profile_network.py) over
the float32 FMA lanes per second the CPU was measured to complete with every
core busy (benchmarks/clock_probe.py).

    python benchmarks/bench_network.py [--repeats 5] [--batch-sizes 1 4]
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_codeformer import accelerate, load_codeformer  # noqa: E402
from lib_codeformer.acceleration import buffers, kernel_build, winograd  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402
from lib_codeformer.testing.machine import cpu_family  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from profile_network import kernel_rate, machine_peak  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "golden_seed1234.npz"
FACE = ROOT / "tests" / "data" / "input_face.png"
FIDELITY = 0.5


def load_reference(state_dict: dict[str, torch.Tensor], device: torch.device) -> Callable | None:
    try:
        import spandrel
        import spandrel_extra_arches
    except ImportError:
        print("spandrel-extra-arches is not installed (pip install -e '.[bench]'): timing ours only.")
        return None
    spandrel_extra_arches.install()
    descriptor = spandrel.ModelLoader().load_from_state_dict({"params_ema": state_dict})
    model = descriptor.model.eval().to(device)
    return lambda x: model(x, weight=FIDELITY)[0]


def golden_input() -> torch.Tensor:
    from PIL import Image

    pixels = np.asarray(Image.open(FACE).convert("RGB"))
    return torch.from_numpy(((pixels.transpose(2, 0, 1)[None] / 255.0).astype(np.float32) - 0.5) / 0.5)


def meets_golden(model, device: torch.device, dtype: torch.dtype) -> str:
    """Whether this mode keeps the tests' tolerances: codes identical, image max <= 1e-3, mean <= 1e-4."""
    golden = np.load(GOLDEN)
    x = golden_input().to(device)
    with torch.inference_mode(), autocast(device, dtype):
        image, logits, _ = model(x, w=FIDELITY, adain=True)
    flipped = int((logits.argmax(2).cpu().numpy() != golden["top_idx"]).sum())
    difference = np.abs(image.float().cpu().numpy() - golden["out_w0p5"])
    verdict = "yes" if flipped == 0 and difference.max() <= 1e-3 and difference.mean() <= 1e-4 else "NO"
    return f"{verdict} ({flipped} codes flipped, max {difference.max():.1e}, mean {difference.mean():.1e})"


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory(run: Callable[[], object], device: torch.device) -> float | None:
    """MiB the peak grows by during ``run``: CUDA allocator peak, or the process's peak RSS on Linux."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    status = Path("/proc/self/status")
    clear_refs = Path("/proc/self/clear_refs")
    if not status.exists():
        return None

    def read_kib(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    clear_refs.write_text("5")  # resets the peak resident set (VmHWM) to the current one
    before = read_kib("VmRSS:")
    run()
    return (read_kib("VmHWM:") - before) / 1024


def kernel_built_with(flags: str) -> winograd.Kernel:
    """The Winograd kernel built with other compiler flags: another CPU family's code path, timed on this CPU."""
    library = Path(tempfile.mkdtemp()) / "winograd.so"
    subprocess.run(kernel_build.compile_command(kernel_build.compiler_command(), shlex.split(flags), library), check=True)
    return winograd.Kernel(ctypes.CDLL(str(library)))


# The x86-64 families whose builds a CPU of each family can run, widest first, with the flags that make them.
FAMILY_BUILDS = {"AVX-512": ("-O3 -march=x86-64-v4", "AVX2"), "AVX2": ("-O3 -march=x86-64-v3", None)}


def narrower_family_kernels() -> list[tuple[str, winograd.Kernel]]:
    """(family, kernel) for each family narrower than this CPU's that it can run (the native build is its own)."""
    kernels = []
    family = FAMILY_BUILDS.get(cpu_family(), (None, None))[1]
    while family in FAMILY_BUILDS:
        flags, narrower = FAMILY_BUILDS[family]
        kernels.append((family, kernel_built_with(flags)))
        family = narrower
    return kernels


def bench(args: argparse.Namespace) -> None:
    if args.kernel_flags:
        kernel_build._loaded["kernel"] = kernel_built_with(args.kernel_flags)
    device = torch.device(args.device)
    torch.manual_seed(0)
    state_dict = synthetic_state_dict(1234)
    ours = accelerate(load_codeformer(state_dict, device=device))
    reference = load_reference(state_dict, device)
    # (name, dtype, fast convolutions on, kernel): on the CPU, fp32 runs with the Winograd kernel
    # (the default wherever it builds), built for this CPU's family and for each narrower family
    # it can run (the per-family rows), and with PyTorch's convolutions only (no C compiler, ARM).
    native = winograd.kernel() if device.type == "cpu" and winograd.available() else None
    modes = [("fp32", torch.float32, True, native)]
    if native is not None:
        modes = [(f"fp32 Winograd, native build ({cpu_family()})", torch.float32, True, native)]
        if not args.kernel_flags:
            narrower = narrower_family_kernels()
            modes += [(f"fp32 Winograd, {family} build", torch.float32, True, built) for family, built in narrower]
        modes.append(("fp32 PyTorch conv (no compiler)", torch.float32, False, native))
    if args.low_precision or device.type == "cuda":
        low = [("bf16", torch.bfloat16)] if device.type == "cpu" else [("fp16", torch.float16), ("bf16", torch.bfloat16)]
        modes += [(name, dtype, True, native) for name, dtype in low]

    machine = f"{platform.processor() or platform.machine()} ({cpu_family()})"
    print(f"machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if device.type == "cpu" and winograd.available():
        print(f"Winograd kernel: {winograd.kernel().vector_floats}-float vectors")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    peak = None
    if device.type == "cpu":
        peak, source = machine_peak(torch.get_num_threads())
        print(f"peak: {peak / 1e9:.0f} G FMA/s ({source})")
    print(
        "\n| mode | batch | ours ms/face, consecutive faces | ours ms/face, first after idle | reference ms/face "
        "| ours/reference, consecutive | ours/reference, first after idle | kernel products, fraction of peak "
        "| meets golden tolerances |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, dtype, fast, kernel in modes:
        kernel_build._loaded["kernel"] = kernel
        accelerate(ours, winograd_kernel=fast)
        accuracy = meets_golden(ours, device, dtype)
        for batch in args.batch_sizes:
            x = golden_input().repeat(batch, 1, 1, 1).to(device)
            x = x + 0.01 * torch.randn_like(x)  # distinct faces

            def run_ours(x=x, dtype=dtype):
                with torch.inference_mode(), autocast(device, dtype):
                    return ours(x, w=FIDELITY, adain=True)[0]

            def run_reference(x=x, dtype=dtype):
                with torch.inference_mode(), autocast(device, dtype):
                    return reference(x)

            run_ours()
            if reference:
                run_reference()
            first_times, ours_times, reference_times = [], [], []
            for _ in range(args.repeats):
                # The first face after an idle spell finds the recycled buffers given back; the next reuses them.
                buffers.pool.release()
                first_times.append(timed(run_ours, device))
                ours_times.append(timed(run_ours, device))
                if reference:
                    reference_times.append(timed(run_reference, device))
            ours_ms = statistics.median(ours_times) * 1000 / batch
            first_ms = statistics.median(first_times) * 1000 / batch
            if reference:
                reference_ms = statistics.median(reference_times) * 1000 / batch
                ratios = f"{ours_ms / reference_ms:.2f} | {first_ms / reference_ms:.2f}"
                reference_text = f"{reference_ms:.0f}"
            else:
                ratios, reference_text = "n/a | n/a", "n/a"
            fraction = "n/a"
            if peak and fast and kernel is not None and dtype == torch.float32:
                rate, _ = kernel_rate(run_ours)
                fraction = f"{rate / peak:.2f}"
            row = f"| {name} | {batch} | {ours_ms:.0f} | {first_ms:.0f} | {reference_text} | {ratios} | {fraction} | {accuracy} |"
            print(row, flush=True)

    x = golden_input().to(device)
    with torch.inference_mode():
        for name, _, fast, kernel in [mode for mode in modes if mode[1] == torch.float32 and mode[3] is native]:
            kernel_build._loaded["kernel"] = kernel
            accelerate(ours, winograd_kernel=fast)
            buffers.pool.release()  # its buffers count: they are held while faces are restored
            peak = peak_memory(lambda: ours(x, w=FIDELITY, adain=True), device)
            if peak is not None:
                print(f"\npeak memory per face (batch 1, {name}): ours {peak:.0f} MiB", end="")
        reference_peak = peak_memory(lambda: reference(x), device) if reference else None
    if reference_peak is not None:
        print(f"\npeak memory per face (batch 1, fp32): reference {reference_peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median is reported)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--low-precision", action="store_true", help="also time bf16 on the CPU")
    parser.add_argument(
        "--kernel-flags",
        help='compiler flags for the Winograd kernel instead of -march=native, e.g. "-O3 -march=x86-64-v3" (the AVX2 build)',
    )
    bench(parser.parse_args())


if __name__ == "__main__":
    main()
