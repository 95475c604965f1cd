"""End-to-end time per image: this pipeline against the path AUTOMATIC1111 1.10 uses.

AUTOMATIC1111's path: facexlib's ``FaceRestoreHelper`` (alignment, ParseNet
mask, paste-back over the whole image) around spandrel-extra-arches'
CodeFormer, one face at a time. Both get the same synthetic CodeFormer weights
and the same landmarks (from YuNet, detected once; facexlib's helper takes
given landmarks), in one process, alternating. RetinaFace and ParseNet get
random weights of the real shapes: their cost does not depend on the values.

Images: the 1-face 512 astronaut, 4 faces in 1024 (a 2 x 2 grid), 1 face in
2048 (the astronaut upscaled 4x). Reported: seconds per image (median of
``--repeats``), the ratio ours/AUTOMATIC1111, and each path's split into
detection, network and paste-back.

    python benchmarks/bench_pipeline.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_codeformer import FaceRestorer, load_codeformer  # noqa: E402
from lib_codeformer.faces.detection import DEFAULT_CONFIDENCE, YuNetDetector, detect_faces  # noqa: E402
from lib_codeformer.network.synthetic import random_weights_like, synthetic_state_dict  # noqa: E402

FIDELITY = 0.5
YUNET_THRESHOLD = DEFAULT_CONFIDENCE["yunet"]


def test_images() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    grid = np.concatenate([np.concatenate([astronaut] * 2, axis=1)] * 2, axis=0)
    return {
        "1 face, 512": astronaut,
        "4 faces, 1024": grid,
        "1 face, 2048": cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC),
    }


class Automatic1111Path:
    """What AUTOMATIC1111 1.10's CodeFormer restorer does for one image (modules/face_restoration_utils.py)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], helper_weights: Path) -> None:
        import spandrel
        import spandrel_extra_arches
        from facexlib.detection.retinaface import RetinaFace
        from facexlib.parsing.parsenet import ParseNet
        from facexlib.utils.face_restoration_helper import FaceRestoreHelper

        torch.save(
            random_weights_like(RetinaFace(network_name="resnet50", half=False, device="cpu"), 1),
            helper_weights / "detection_Resnet50_Final.pth",
        )
        torch.save(
            random_weights_like(ParseNet(in_size=512, out_size=512, parsing_ch=19), 2), helper_weights / "parsing_parsenet.pth"
        )
        spandrel_extra_arches.install()
        self.net = spandrel.ModelLoader().load_from_state_dict({"params_ema": state_dict}).model.eval()
        self.helper = FaceRestoreHelper(
            upscale_factor=1,
            face_size=512,
            crop_ratio=(1, 1),
            det_model="retinaface_resnet50",
            save_ext="png",
            use_parse=True,
            device=torch.device("cpu"),
            model_rootpath=str(helper_weights),
        )

    def detect(self, image_rgb: np.ndarray) -> None:
        self.helper.clean_all()
        self.helper.read_image(image_rgb[:, :, ::-1].copy())
        self.helper.get_face_landmarks_5(only_center_face=False, resize=640, eye_dist_threshold=5)

    def restore(self, image_rgb: np.ndarray, landmarks: list[np.ndarray], timings: dict[str, float]) -> np.ndarray:
        started = time.perf_counter()
        helper = self.helper
        helper.clean_all()
        helper.read_image(image_rgb[:, :, ::-1].copy())
        helper.all_landmarks_5 = [np.asarray(points, dtype=np.float32) for points in landmarks]
        helper.align_warp_face()
        network = 0.0
        for cropped in helper.cropped_faces:
            face = torch.from_numpy(cropped[:, :, ::-1].transpose(2, 0, 1).copy()).float().div(255.0)
            face = face.sub(0.5).div(0.5).unsqueeze(0)
            network_started = time.perf_counter()
            with torch.no_grad():
                restored = self.net(face, weight=FIDELITY)[0]
            network += time.perf_counter() - network_started
            restored = restored.squeeze(0).clamp(-1, 1).add(1).div(2).permute(1, 2, 0).numpy()[:, :, ::-1]
            helper.add_restored_face((restored * 255.0).round().astype(np.uint8))
        helper.get_inverse_affine(None)
        result = helper.paste_faces_to_input_image()
        timings["network"] += network
        timings["paste"] += time.perf_counter() - started - network
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    state_dict = synthetic_state_dict(1234)
    ours = FaceRestorer(load_codeformer(state_dict), detector="yunet", device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        reference = Automatic1111Path(state_dict, Path(folder))
        print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, CPU")
        print("\n| image | ours s | AUTOMATIC1111 s | ours/A1111 | ours: detect / network / paste s | A1111: network / paste s |")
        print("|---|---|---|---|---|---|")
        for name, image in test_images().items():
            detections = detect_faces(YuNetDetector(), image, YUNET_THRESHOLD)
            landmarks = [d.landmarks for d in detections]
            ours.restore(image, landmarks=landmarks)  # warm-up
            ours_runs, reference_runs = [], []
            ours_split = {"detect": [], "network": [], "paste": []}
            reference_split = {"network": [], "paste": []}
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = ours.restore(image, detector="yunet")
                ours_runs.append(time.perf_counter() - started)
                for key in ours_split:
                    ours_split[key].append(result.timings[key])
                timings = {"network": 0.0, "paste": 0.0}
                started = time.perf_counter()
                reference.restore(image, landmarks, timings)
                reference_runs.append(time.perf_counter() - started)
                for key in reference_split:
                    reference_split[key].append(timings[key])
            assert result.restored_count == len(landmarks), "ours must restore the faces the reference restores"
            ours_s, reference_s = statistics.median(ours_runs), statistics.median(reference_runs)
            ours_parts = " / ".join(f"{statistics.median(v):.2f}" for v in ours_split.values())
            reference_parts = " / ".join(f"{statistics.median(v):.2f}" for v in reference_split.values())
            print(
                f"| {name} ({len(landmarks)} found) | {ours_s:.2f} | {reference_s:.2f} | {ours_s / reference_s:.2f} "
                f"| {ours_parts} | {reference_parts} |",
                flush=True,
            )
        image = test_images()["1 face, 2048"]
        started = time.perf_counter()
        reference.detect(image)
        retina = time.perf_counter() - started
        started = time.perf_counter()
        detect_faces(YuNetDetector(), image, YUNET_THRESHOLD)
        yunet = time.perf_counter() - started
        print(f"\ndetection on the 2048 image: RetinaFace-ResNet50 as AUTOMATIC1111 runs it {retina:.2f} s, YuNet {yunet:.2f} s")


if __name__ == "__main__":
    main()
