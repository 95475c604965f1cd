"""Memory of one restore on a large photo with the real network: how much the process's peak grows.

An 8000 x 6000 photo (144 MB as RGB 8-bit) holding one face, restored by the
full-size network (seed-1234 synthetic weights; memory does not depend on the
values), once cold (the network's recycled working memory empty, as on a
first call or after 15 s idle) and once warm (right after another restore).
Reported: the growth of the peak resident set (Linux ``VmHWM``) against the
image's size, split into the image-sized part (the output copy) and the rest.

    python benchmarks/bench_memory.py [--height 6000 --width 8000]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_codeformer import FaceRestorer, load_codeformer  # noqa: E402
from lib_codeformer.acceleration import buffers  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402
from lib_codeformer.testing.machine import cpu_family  # noqa: E402

STATUS = Path("/proc/self/status")


def kib(field: str) -> int:
    return int(next(line for line in STATUS.read_text().splitlines() if line.startswith(field)).split()[1])


def peak_growth(run) -> int:
    """Bytes the peak resident set grows by during ``run``."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current resident set
    before = kib("VmRSS:")
    run()
    return (kib("VmHWM:") - before) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--width", type=int, default=8000)
    args = parser.parse_args()
    from skimage import data

    large = np.full((args.height, args.width, 3), 120, np.uint8)
    face = cv2.resize(data.astronaut()[20:220, 130:320], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    large[2000 : 2000 + face.shape[0], 3000 : 3000 + face.shape[1]] = face
    restorer = FaceRestorer(load_codeformer(synthetic_state_dict(1234)), detector="yunet", device="cpu")
    restorer.restore(np.ascontiguousarray(cv2.resize(large, (800, 600))))  # models loaded, kernel built
    machine = f"{platform.processor() or platform.machine()} ({cpu_family()})"
    print(f"CPU: {machine}, torch {torch.__version__}; image {args.width} x {args.height}, {large.nbytes / 2**20:.0f} MiB")
    print("\n| case | peak growth MiB | x the image | beyond one image copy MiB |")
    print("|---|---|---|---|")
    for case in ("cold (recycled memory empty)", "warm (right after another restore)"):
        if case.startswith("cold"):
            buffers.pool.release()
        growth = peak_growth(lambda: restorer.restore(large))
        beyond = (growth - large.nbytes) / 2**20
        print(f"| {case} | {growth / 2**20:.0f} | {growth / large.nbytes:.2f} | {beyond:.0f} |", flush=True)
    print(f"\nrecycled working memory held (free) after the passes: {buffers.pool.free_bytes() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
