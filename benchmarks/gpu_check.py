"""The GPU check: everything this project does on an NVIDIA GPU, measured in one run, one table at the end.

On a CUDA machine (meant to finish within 8 minutes on one GPU):

1. the tests that need CUDA (``tests/test_gpu.py``);
2. fp32, bf16 and fp16 against the official network's golden outputs (codebook codes flipped, max error),
   pure and accelerated network;
3. moving the restorer's models to the CPU and back, and the GPU memory released (measured);
4. a real photo (``skimage.data.astronaut()``) restored end to end on the GPU, RetinaFace detection on the GPU
   too (random weights of the real shape: its detections are timed, the faces restored are YuNet's);
5. the network (batch 1 and the batch size chosen by free memory) and whole images against AUTOMATIC1111's
   path (spandrel-extra-arches' CodeFormer, facexlib's helper) on the same GPU, peak GPU memory per face.

Without CUDA it says so, checks its own plumbing on the CPU with a small network (every step runs, none
is timed against anything) and exits 0; CI runs it so (``tests/test_gpu_check.py``). A step that cannot
run (a package missing on the machine) is a row that says why, never a crash; the exit status is 1 only
where a check failed.

    python benchmarks/gpu_check.py [--repeats 5] [--skip-tests]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lib_codeformer import CodeFormer, FaceRestorer, accelerate, load_codeformer  # noqa: E402
from lib_codeformer.network.synthetic import parameter_shapes, synthetic_state_dict  # noqa: E402
from lib_codeformer.restorer import default_batch_size  # noqa: E402
from lib_codeformer.testing.machine import cpu_family  # noqa: E402

FIDELITY = 0.5
# The small network for the CPU self-check: the released structure with few channels and layers.
SMALL = {"dim_embd": 64, "n_head": 4, "n_layers": 2, "codebook_size": 64, "base_channels": 32, "embed_dim": 32}


@dataclass
class Row:
    step: str
    status: str  # ok, FAIL, skipped
    result: str


class Check:
    """The rows of the final table; each step runs guarded, so one that breaks says why and the others go on."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def step(self, name: str, run: Callable[[], str | tuple[str, bool]]) -> None:
        started = time.perf_counter()
        try:
            outcome = run()
            text, good = outcome if isinstance(outcome, tuple) else (outcome, True)
            status = "ok" if good else "FAIL"
        except Skipped as reason:
            text, status = str(reason), "skipped"
        except Exception as error:
            traceback.print_exc()
            text, status = f"{type(error).__name__}: {error}", "FAIL"
        self.rows.append(Row(name, status, f"{text} ({time.perf_counter() - started:.1f} s)"))
        print(f"[{status}] {name}: {text}", flush=True)

    def table(self) -> str:
        lines = ["| step | status | result |", "|---|---|---|"]
        lines += [f"| {row.step} | {row.status} | {row.result} |" for row in self.rows]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(row.status == "FAIL" for row in self.rows)


class Skipped(Exception):
    """A step that cannot run here; the message says why."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    run()  # warm-up: kernels chosen, memory pooled
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_cuda_tests() -> tuple[str, bool]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = (result.stdout.strip().splitlines() or ["no output"])[-1]
    return last, result.returncode == 0


def golden_rows(device: torch.device, state_dict: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """Each precision, pure and accelerated: codes flipped and the largest error against the golden outputs."""
    import bench_network

    golden = np.load(ROOT / "tests" / "data" / "golden_seed1234.npz")
    x = bench_network.golden_input().to(device)
    pure = load_codeformer(state_dict, device=device)
    fast = accelerate(pure)
    parts, good = [], True
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        for form, model in (("pure", pure), ("fast", fast)):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                image, logits, _ = model(x, w=FIDELITY, adain=True)
            flipped = int((logits.argmax(2).cpu().numpy() != golden["top_idx"]).sum())
            error = float(np.abs(image.float().cpu().numpy() - golden["out_w0p5"]).max())
            parts.append(f"{name} {form}: {flipped} flipped, max {error:.1e}")
            if dtype == torch.float32:
                good = good and flipped == 0 and error <= 1e-3
    return "; ".join(parts), good


def release_row(device: torch.device, model: torch.nn.Module, photo: np.ndarray) -> tuple[str, bool]:
    """Models to the CPU and back; the GPU memory the restorer held, and what is left after the move."""
    if device.type != "cuda":
        restorer = FaceRestorer(model, detector="yunet", device="cpu")
        restorer.restore(photo)
        restorer.to("cpu")
        return "plumbing only (no GPU memory to release)", True
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    restorer = FaceRestorer(model, detector="yunet", device=device)
    restorer.restore(photo)
    held = torch.cuda.memory_allocated(device) - before
    restorer.to("cpu")
    torch.cuda.empty_cache()
    left = torch.cuda.memory_allocated(device) - before
    restorer.to(device)
    again = restorer.restore(photo).restored_count
    restorer.to("cpu")
    torch.cuda.empty_cache()
    text = f"held {held / 2**20:.0f} MiB on the GPU, {left / 2**20:.1f} MiB left after to('cpu'); back on the GPU: {again} face"
    return text, left <= 1 << 20 and again == 1


def photo_row(device: torch.device, model: torch.nn.Module, photo: np.ndarray, folder: Path) -> tuple[str, bool]:
    """A real photo end to end on the device, RetinaFace (random weights of its real shape) on the device too."""
    from lib_codeformer.faces.detection import detect_faces

    try:
        from facexlib.detection.retinaface import RetinaFace

        from lib_codeformer.network.synthetic import random_weights_like
    except ImportError as error:
        raise Skipped(f"facexlib is not installed ({error})") from None
    weights = random_weights_like(RetinaFace(network_name="resnet50", half=False, device="cpu"), 1)
    torch.save(weights, folder / "detection_Resnet50_Final.pth")
    restorer = FaceRestorer(model, device=device, detector_model_dirs=[folder], download=False)
    retinaface = restorer.detector("retinaface_resnet50")
    if retinaface.name != "retinaface_resnet50":
        raise Skipped("RetinaFace could not be built here")
    started = time.perf_counter()
    detect_faces(retinaface, photo, 0.97, 640)
    synchronize(device)
    detect_seconds = time.perf_counter() - started
    result = restorer.restore(photo, detector="yunet")
    unchanged = np.ones(photo.shape[:2], bool)
    for x0, y0, x1, y1 in result.changed:
        unchanged[y0:y1, x0:x1] = False
    exact = bool(np.array_equal(result.image[unchanged], photo[unchanged]))
    restorer.to("cpu")
    where = next(retinaface.model.parameters()).device
    text = f"{result.restored_count} face restored, pixels outside it exact: {exact}; "
    text += f"RetinaFace ran on {where} in {detect_seconds:.3f} s"
    return text, result.restored_count == 1 and exact


def network_row(device: torch.device, state_dict: dict[str, torch.Tensor], repeats: int) -> tuple[str, bool]:
    """Ours against spandrel-extra-arches' CodeFormer (AUTOMATIC1111's) on the same device, ms per face."""
    import bench_network

    ours = accelerate(load_codeformer(state_dict, device=device))
    # The reference takes the released network's shape only: the CPU self-check's small network is timed alone.
    reference = bench_network.load_reference(state_dict, device) if device.type == "cuda" else None
    batch = default_batch_size(device) if device.type == "cuda" else 2
    parts = []
    for size in sorted({1, batch}):
        x = torch.rand(size, 3, 512, 512, device=device) * 2 - 1
        with torch.inference_mode():
            mine = median_seconds(lambda x=x: ours(x, w=FIDELITY, adain=True), device, repeats) / size
            line = f"batch {size}: ours {mine * 1000:.1f} ms/face"
            if reference is not None:
                theirs = median_seconds(lambda x=x: reference(x), device, repeats) / size
                line += f", AUTOMATIC1111's {theirs * 1000:.1f} ms/face, ratio {mine / theirs:.2f}"
        parts.append(line)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            with torch.inference_mode():
                ours(x, w=FIDELITY, adain=True)
            synchronize(device)
            parts[-1] += f", peak {(torch.cuda.max_memory_allocated(device) - base) / 2**20 / size:.0f} MiB/face"
    chosen = f"batch size chosen by free memory: {default_batch_size(device)}" if device.type == "cuda" else "CPU: batch 2"
    if reference is None:
        parts.append("AUTOMATIC1111's network not timed (no GPU, or spandrel-extra-arches not installed)")
    return "; ".join([*parts, chosen]), True


def whole_image_row(
    device: torch.device, state_dict: dict[str, torch.Tensor], photo: np.ndarray, folder: Path, repeats: int
) -> str:
    """One photo, like for like (RetinaFace landmarks given to both, parsing mask), ours against AUTOMATIC1111's path."""
    import bench_pipeline

    from lib_codeformer.faces.detection import YuNetDetector, detect_faces

    if device.type != "cuda":
        raise Skipped("no GPU: the released network's shape is what AUTOMATIC1111's path loads")
    try:
        reference = bench_pipeline.Automatic1111Path(state_dict, folder, str(device))
    except ImportError as error:
        raise Skipped(f"AUTOMATIC1111's path needs spandrel-extra-arches and facexlib ({error})") from None
    landmarks = [d.landmarks for d in detect_faces(YuNetDetector(), photo, 0.8)]
    ours = FaceRestorer(load_codeformer(state_dict), device=device, detector_model_dirs=[folder], download=False)
    mine = median_seconds(lambda: ours.restore(photo, landmarks=landmarks, mask="parsing"), device, repeats)
    timings = {"detect": 0.0, "network": 0.0, "paste": 0.0}
    theirs = median_seconds(lambda: reference.restore(photo, landmarks, timings), device, repeats)
    default = median_seconds(lambda: ours.restore(photo, detector="yunet"), device, repeats)
    ours.to("cpu")
    return (
        f"{len(landmarks)} face, 512 px: ours {mine:.3f} s like for like, {default:.3f} s our default, "
        f"AUTOMATIC1111's {theirs:.3f} s; ratios {mine / theirs:.2f} / {default / theirs:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-tests", action="store_true", help="leave out the pytest run of tests/test_gpu.py")
    args = parser.parse_args()
    check = Check()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        name = torch.cuda.get_device_name(device)
        free, total = torch.cuda.mem_get_info(device)
        memory = f"{free / 2**30:.0f} of {total / 2**30:.0f} GiB free"
        print(f"GPU: {name}, {memory}; torch {torch.__version__}, CUDA {torch.version.cuda}")
        state_dict = synthetic_state_dict(1234)
        repeats = args.repeats
    else:
        print("No CUDA device here (torch.cuda.is_available() is False): nothing to measure on a GPU.")
        print(f"Checking this script's own plumbing on the CPU ({platform.machine()}, {cpu_family()}) with a small network.")
        with torch.device("meta"):
            shapes = parameter_shapes(CodeFormer(**SMALL))
        state_dict = synthetic_state_dict(7, shapes)
        repeats = 1
    model = accelerate(load_codeformer(state_dict, device=device))
    from skimage import data

    photo = data.astronaut()
    with tempfile.TemporaryDirectory() as folder:
        if cuda and not args.skip_tests:
            check.step("tests that need CUDA", run_cuda_tests)
        if cuda:
            check.step("fp32 / bf16 / fp16 against the golden outputs", lambda: golden_rows(device, state_dict))
        check.step("models to the CPU and back, GPU memory released", lambda: release_row(device, model, photo))
        check.step("a real photo end to end, detection on the device", lambda: photo_row(device, model, photo, Path(folder)))
        check.step("the network against AUTOMATIC1111's", lambda: network_row(device, state_dict, repeats))
        check.step(
            "whole image against AUTOMATIC1111's path",
            lambda: whole_image_row(device, state_dict, photo, Path(folder), repeats),
        )
    print()
    print(check.table())
    if not cuda:
        print("\nNo GPU: the rows above checked the plumbing on the CPU; no GPU figure was measured.")
        return 0
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
