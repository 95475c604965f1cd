"""The ComfyUI Restore Faces node against the path ComfyUI's facerestore_cf and AUTOMATIC1111 share, same images.

facerestore_cf (and ReActor's restore) run facexlib's FaceRestoreHelper around a
CodeFormer, one face at a time: the path ``bench_pipeline.Automatic1111Path``
times (RetinaFace at 640 px, ParseNet mask, spandrel's CodeFormer). The node
is timed as ComfyUI calls it: an IMAGE batch (B, H, W, 3 float) in, image,
mask and report out (16-bit conversion and the exact copy-back included),
with YuNet and the box mask (what its default detector runs where RetinaFace's
weights are not at hand, as here); the reference's RetinaFace and ParseNet
get random weights of their real shapes (their cost does not depend on the
values) and restore the faces YuNet finds. A like-for-like row (the same
detector and mask on both sides) is bench_pipeline.py's. Same synthetic
CodeFormer weights on both sides; median of ``--repeats``; ratio node /
reference (< 1 is faster).

    python benchmarks/bench_comfyui.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_line, median_time  # noqa: E402

from lib_codeformer import FaceRestorer, load_codeformer  # noqa: E402
from lib_codeformer.faces.detection import YuNetDetector, detect_faces  # noqa: E402
from lib_codeformer.frontends.comfyui import nodes  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import bench_pipeline

    state_dict = synthetic_state_dict(1234)
    print(machine_line())
    print("\n| image | node row | node s | facexlib path s | node / facexlib |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        reference = bench_pipeline.Automatic1111Path(state_dict, Path(folder))
        restorer = FaceRestorer(load_codeformer(state_dict), device="cpu", detector_model_dirs=[folder], download=False)
        model = nodes.CodeFormerModel("synthetic", restorer)
        node = nodes.RestoreFaces()
        defaults = {option.key: option.control_default for option in nodes.RESTORE_OPTIONS}
        rows = {"YuNet + box": {**defaults, "detector": "yunet"}}
        for name, image in bench_pipeline.test_images(None).items():
            batch = torch.from_numpy(image.astype(np.float32) / 255.0)[None]
            landmarks = [d.landmarks for d in detect_faces(YuNetDetector(), image, 0.8)]
            def path(image=image, landmarks=landmarks) -> None:
                reference.restore(image, landmarks, {"detect": 0.0, "network": 0.0, "paste": 0.0})

            path()  # warm-up
            theirs = median_time(path, args.repeats)
            for row, values in rows.items():
                node.restore(model, batch, **values)  # warm-up: every model loaded, kernels built
                ours = median_time(lambda batch=batch, values=values: node.restore(model, batch, **values), args.repeats)
                figures = f"{ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}"
                print(f"| {name} ({len(landmarks)} faces) | {row} | {figures} |", flush=True)


if __name__ == "__main__":
    main()
