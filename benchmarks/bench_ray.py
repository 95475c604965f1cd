"""Images per second of the same folder: the local command line against ``--ray`` on a two-node cluster.

Both at equal cores: locally one process, PyTorch's threads on every core
(``--jobs 2`` reading and writing beside it); on Ray a head node and a worker
node on this machine (two raylets, one CPU each, everything on 127.0.0.1),
so two single-threaded actors. A third run, the local command with one
thread (``OMP_NUM_THREADS=1``), is what each actor does without Ray: Ray's
own overhead per image is the actors' cost per image and core against it.
Each side restores a folder of ``--images`` photos and one twice that size;
the difference of the two wall times, divided by ``--images``, is the
marginal cost per image (start-up, loading the weights, starting the actors
cancel out), reported beside the whole runs' images per second. With
``--repeats R`` every run is made R times, interleaved, and the fastest of
each is kept: on a shared machine other work only ever makes a run slower.
Faces: the astronaut and Grace Hopper, one face each, alternating (the
cluster idles beside the local runs). The network is CodeFormer's released
size with synthetic weights (its cost does not depend on the values;
``--small`` for the tests' small network). The machine's CPU, cores and load
average are printed with the figures.

    python benchmarks/bench_ray.py [--images 8] [--repeats 1] [--small]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Ray keeps 127.0.0.1 as the nodes' address only with this (else it takes the machine's network address); set
# before Ray is imported.
os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})

SMALL_CONFIG = {"dim_embd": 64, "n_head": 4, "n_layers": 2, "codebook_size": 64, "base_channels": 32, "embed_dim": 32}


def write_weights(folder: Path, small: bool) -> Path:
    import torch
    from safetensors.torch import save_file

    from lib_codeformer import CodeFormer
    from lib_codeformer.network.synthetic import parameter_shapes, synthetic_state_dict

    if small:
        with torch.device("meta"):
            state = synthetic_state_dict(7, parameter_shapes(CodeFormer(**SMALL_CONFIG)))
    else:
        state = synthetic_state_dict(1234)
    path = folder / "weights.safetensors"
    save_file(dict(state), path)
    return path


def write_photos(folder: Path, count: int) -> Path:
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    faces = [Image.fromarray(data.astronaut()), Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    folder.mkdir(parents=True)
    for index in range(count):
        faces[index % 2].save(folder / f"photo{index:03d}.png")
    return folder


def run(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return time.perf_counter() - started


def restore_command(source: Path, output: Path, weights: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "lib_codeformer", "restore", str(source), "--output", str(output)]
    return [*command, "--weights", str(weights), "--detector", "yunet", "--quiet", *extra]


def sides(photos: Path, output: Path, weights: Path, address: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The three runs of one folder: (command, environment) each."""
    return {
        "local": (restore_command(photos, output / "local", weights, "--jobs", "2"), {}),
        "single": (restore_command(photos, output / "single", weights, "--jobs", "2"), {"OMP_NUM_THREADS": "1"}),
        "ray": (restore_command(photos, output / "ray", weights, "--ray", address), {}),
    }


def start_cluster():
    """Head and worker node, one CPU each, on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 400 * 2**20, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes(timeout=60)
    return cluster


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    model = models[0] if models else platform.processor()
    vectors = "AVX-512" if "avx512f" in cpuinfo else "AVX2" if "avx2" in cpuinfo else "no AVX2"
    return f"{model}, {os.cpu_count()} cores, {vectors}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="photos in the smaller folder (the larger has twice as many)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each kind; the fastest is kept")
    parser.add_argument("--small", action="store_true", help="the tests' small network instead of the released size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as temporary:
        folder = Path(temporary)
        os.makedirs(folder / "ray-tmp" / "ray")
        os.environ["RAY_TMPDIR"] = str(folder / "ray-tmp")
        weights = write_weights(folder, args.small)
        sizes = {"n": args.images, "2n": 2 * args.images}
        photos = {name: write_photos(folder / f"photos-{name}", count) for name, count in sizes.items()}
        print(f"machine: {machine()}; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        seconds: dict[tuple[str, str], float] = {}
        cluster = start_cluster()
        try:
            for repeat in range(args.repeats):
                for name in sizes:
                    runs = sides(photos[name], folder / f"{name}-{repeat}", weights, cluster.address)
                    for side, (command, env) in runs.items():
                        took = run(command, env)
                        seconds[side, name] = min(took, seconds.get((side, name), took))
        finally:
            cluster.shutdown()
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        report(seconds, sizes, "small" if args.small else "released size")


SIDES = ("local", "ray", "single")


def report(seconds: dict[tuple[str, str], float], sizes: dict[str, int], network: str) -> None:
    marginal = {side: (seconds[side, "2n"] - seconds[side, "n"]) / sizes["n"] for side in SIDES}
    print(f"\nnetwork: {network}; {sizes['n']} and {sizes['2n']} photos, one face each\n")
    print("| | local, --jobs 2 (2 threads) | Ray, 2 nodes x 1 CPU | local, 1 thread |")
    print("| --- | --- | --- | --- |")
    for name, count in sizes.items():
        cells = [f"{seconds[side, name]:.1f} s ({count / seconds[side, name]:.2f} images/s)" for side in SIDES]
        print(f"| {count} photos, whole run | {' | '.join(cells)} |")
    cells = [f"{marginal[side]:.2f} s ({1 / marginal[side]:.2f} images/s)" for side in SIDES]
    print(f"| per image, marginal | {' | '.join(cells)} |")
    against_local = marginal["ray"] / marginal["local"] - 1
    print(f"\nRay against the local command at equal cores (2): {100 * against_local:+.1f} % per image")
    per_core = 2 * marginal["ray"] / marginal["single"] - 1
    print(f"Ray's own overhead per image and core (each actor against the 1-thread command): {100 * per_core:+.1f} %")


if __name__ == "__main__":
    main()
