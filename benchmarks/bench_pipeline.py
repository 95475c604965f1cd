"""End-to-end time per image: this pipeline against the path AUTOMATIC1111 1.10 uses.

AUTOMATIC1111's path: facexlib's ``FaceRestoreHelper`` (RetinaFace-ResNet50
detection on the image scaled to 640 px, alignment, ParseNet mask, paste-back
over the whole image) around spandrel-extra-arches' CodeFormer, one face at a
time. Rows, each timed on both sides in one process, alternating:

- "like for like": ours does the same work: RetinaFace-ResNet50 at 640 px
  (timed on both sides) and the ParseNet mask;
- "our default": YuNet and the box mask, against the same AUTOMATIC1111 path.

Both sides get the same synthetic CodeFormer weights and restore the same
faces: the landmarks YuNet finds (RetinaFace and ParseNet get random weights
of the real shapes, so their detections would be noise; their cost does not
depend on the values, and their detections are timed and discarded).

Images: the 1-face 512 astronaut, 4 faces in 1024 (a 2 x 2 grid), 1 face in
2048 (the astronaut upscaled 4x), and a real group photo with 6 faces of
different sizes (insightface's ``t1.jpg``, 1280 x 886, taken from the
insightface wheel with ``pip download``, or ``--group-photo PATH``). Reported:
seconds per image (median of ``--repeats``), the ratio ours/AUTOMATIC1111,
and each path's split.

    python benchmarks/bench_pipeline.py [--repeats 3] [--group-photo t1.jpg]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_codeformer import FaceRestorer, load_codeformer  # noqa: E402
from lib_codeformer.acceleration import winograd  # noqa: E402
from lib_codeformer.faces.detection import DEFAULT_CONFIDENCE, YuNetDetector, detect_faces  # noqa: E402
from lib_codeformer.network.synthetic import random_weights_like, synthetic_state_dict  # noqa: E402
from lib_codeformer.testing.machine import cpu_family  # noqa: E402

FIDELITY = 0.5
YUNET_THRESHOLD = DEFAULT_CONFIDENCE["yunet"]


def test_images(group_photo: Path | None) -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    grid = np.concatenate([np.concatenate([astronaut] * 2, axis=1)] * 2, axis=0)
    images = {
        "1 face, 512": astronaut,
        "4 faces, 1024": grid,
        "1 face, 2048": cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC),
    }
    if group_photo is not None:
        photo = cv2.imread(str(group_photo), cv2.IMREAD_COLOR)
        images[f"group photo, {photo.shape[1]} x {photo.shape[0]}"] = np.ascontiguousarray(photo[:, :, ::-1])
    return images


def fetch_group_photo(folder: Path) -> Path | None:
    """insightface's 6-face ``t1.jpg``, from its wheel on the package index (no other network access needed)."""
    command = [sys.executable, "-m", "pip", "download", "insightface", "--no-deps", "--only-binary", ":all:", "-d", str(folder)]
    if subprocess.run(command, capture_output=True).returncode != 0:
        return None
    for wheel in folder.glob("insightface-*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith("data/images/t1.jpg"):
                    target = folder / "t1.jpg"
                    target.write_bytes(archive.read(name))
                    return target
    return None


class Automatic1111Path:
    """What AUTOMATIC1111 1.10's CodeFormer restorer does for one image (modules/face_restoration_utils.py)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], helper_weights: Path, device: str = "cpu") -> None:
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
        self.device = torch.device(device)
        self.net = spandrel.ModelLoader().load_from_state_dict({"params_ema": state_dict}).model.eval().to(self.device)
        self.helper = FaceRestoreHelper(
            upscale_factor=1,
            face_size=512,
            crop_ratio=(1, 1),
            det_model="retinaface_resnet50",
            save_ext="png",
            use_parse=True,
            device=self.device,
            model_rootpath=str(helper_weights),
        )

    def restore(self, image_rgb: np.ndarray, landmarks: list[np.ndarray], timings: dict[str, float]) -> np.ndarray:
        """AUTOMATIC1111's steps; the landmarks its detector found are replaced by ``landmarks`` (see the docstring)."""
        started = time.perf_counter()
        helper = self.helper
        helper.clean_all()
        helper.read_image(image_rgb[:, :, ::-1].copy())
        helper.get_face_landmarks_5(only_center_face=False, resize=640, eye_dist_threshold=5)
        detected = time.perf_counter()
        timings["detect"] += detected - started
        started = detected
        helper.all_landmarks_5 = [np.asarray(points, dtype=np.float32) for points in landmarks]
        helper.align_warp_face()
        network = 0.0
        for cropped in helper.cropped_faces:
            face = torch.from_numpy(cropped[:, :, ::-1].transpose(2, 0, 1).copy()).float().div(255.0)
            face = face.sub(0.5).div(0.5).unsqueeze(0).to(self.device)
            network_started = time.perf_counter()
            with torch.no_grad():
                restored = self.net(face, weight=FIDELITY)[0]
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            network += time.perf_counter() - network_started
            restored = restored.squeeze(0).clamp(-1, 1).add(1).div(2).permute(1, 2, 0).cpu().numpy()[:, :, ::-1]
            helper.add_restored_face((restored * 255.0).round().astype(np.uint8))
        helper.get_inverse_affine(None)
        result = helper.paste_faces_to_input_image()
        timings["network"] += network
        timings["paste"] += time.perf_counter() - started - network
        return result


def median_split(runs: list[dict[str, float]]) -> str:
    return " / ".join(f"{statistics.median(run[key] for run in runs):.2f}" for key in runs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-photo", type=Path, help="a group photo (default: insightface's t1.jpg via pip download)")
    args = parser.parse_args()

    state_dict = synthetic_state_dict(1234)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        group_photo = args.group_photo or fetch_group_photo(folder)
        if group_photo is None:
            print("the group photo could not be had (pip download insightface failed): its row is left out")
        reference = Automatic1111Path(state_dict, folder)  # writes RetinaFace's and ParseNet's weights into folder
        ours = FaceRestorer(load_codeformer(state_dict), device="cpu", detector_model_dirs=[folder], download=False)
        retinaface = ours.detector("retinaface_resnet50")
        assert retinaface.name == "retinaface_resnet50", "ours must time the same detector"
        kernel = f"Winograd kernel {winograd.kernel().vector_floats}-float" if winograd.available() else "no Winograd kernel"
        machine = f"{platform.processor() or platform.machine()} ({cpu_family()})"
        print(f"CPU: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}, {kernel}")
        header = "| image | row | ours s | AUTOMATIC1111 s | ours/A1111 | ours: detect / network / paste s | A1111: the same |"
        print(f"\n{header}")
        print("|---|---|---|---|---|---|---|")
        for name, image in test_images(group_photo).items():
            landmarks = [d.landmarks for d in detect_faces(YuNetDetector(), image, YUNET_THRESHOLD)]
            ours.restore(image, landmarks=landmarks, mask="parsing")  # warm-up: every model loaded, kernels built
            reference.restore(image, landmarks, {"detect": 0.0, "network": 0.0, "paste": 0.0})
            times: dict[str, list[float]] = {"like": [], "default": [], "reference": []}
            splits: dict[str, list[dict[str, float]]] = {"like": [], "default": [], "reference": []}
            for _ in range(args.repeats):
                started = time.perf_counter()
                detect_faces(retinaface, image, DEFAULT_CONFIDENCE["retinaface_resnet50"], max_side=640)
                detected = time.perf_counter() - started
                result = ours.restore(image, landmarks=landmarks, mask="parsing")
                times["like"].append(time.perf_counter() - started)
                splits["like"].append({**result.timings, "detect": detected})
                assert result.restored_count == len(landmarks), "ours must restore the faces the reference restores"

                started = time.perf_counter()
                result = ours.restore(image, detector="yunet", mask="box")
                times["default"].append(time.perf_counter() - started)
                splits["default"].append(dict(result.timings))

                timings = {"detect": 0.0, "network": 0.0, "paste": 0.0}
                started = time.perf_counter()
                reference.restore(image, landmarks, timings)
                times["reference"].append(time.perf_counter() - started)
                splits["reference"].append(timings)
            reference_s = statistics.median(times["reference"])
            for row, label in (("like", "like for like: RetinaFace-R50 + parsing"), ("default", "our default: YuNet + box")):
                ours_s = statistics.median(times[row])
                print(
                    f"| {name} ({len(landmarks)} faces) | {label} | {ours_s:.2f} | {reference_s:.2f} "
                    f"| {ours_s / reference_s:.2f} | {median_split(splits[row])} | {median_split(splits['reference'])} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
