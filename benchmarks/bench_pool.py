"""What the cap on recycled working memory costs: network time per face against the memory kept between passes.

The full-size network (seed-1234 synthetic weights) on the CPU with the
Winograd kernel, for each cap (``BufferPool.max_free_bytes``, MiB; "none" is
no cap): consecutive faces at batch 1 and at batch 4, timed after one warm-up
pass with that cap, so each row is the steady state a folder, a video or a
photo with several faces sees. Reported with the free memory the pool keeps
between passes and the growth of the process's peak resident set (Linux
``VmHWM``) during one pass, against no recycling at all (cap 0) in the same
run. The default cap (``DEFAULT_MAX_FREE_MIB``) is chosen from this table.

    python benchmarks/bench_pool.py [--repeats 3] [--caps 0 256 512 1024 2048 none] [--batch-sizes 1 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_memory import peak_growth  # noqa: E402
from common import machine_line, median_time  # noqa: E402

from lib_codeformer import accelerate, load_codeformer  # noqa: E402
from lib_codeformer.acceleration import buffers  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402

FIDELITY = 0.5
UNCAPPED = 1 << 62


def cap_bytes(text: str) -> int:
    return UNCAPPED if text == "none" else int(text) << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caps", nargs="+", default=["0", "256", "512", "1024", "2048", "none"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    model = accelerate(load_codeformer(synthetic_state_dict(1234)))
    pool = buffers.pool
    print(machine_line() + f"; default cap {buffers.DEFAULT_MAX_FREE_MIB} MiB\n")
    print("| batch | cap MiB | s per face | x cap 0 | kept between passes MiB | peak growth during a pass MiB |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        x = torch.rand(batch, 3, 512, 512) * 2 - 1

        def one_pass(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                model(x, w=FIDELITY, adain=True)

        unpooled = None
        for cap in args.caps:
            pool.release()
            pool.max_free_bytes = cap_bytes(cap)
            one_pass()  # warm-up: the pool fills to its cap
            seconds = median_time(one_pass, args.repeats) / batch
            kept = pool.free_bytes()
            growth = peak_growth(one_pass)
            unpooled = unpooled or seconds
            print(
                f"| {batch} | {cap} | {seconds:.2f} | {seconds / unpooled:.2f} | {kept / 2**20:.0f} | "
                f"{growth / 2**20:.0f} |",
                flush=True,
            )
    pool.max_free_bytes = buffers.max_free_bytes_from_environment()


if __name__ == "__main__":
    main()
