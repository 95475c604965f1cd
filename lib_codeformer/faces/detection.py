"""Face detectors: 5 landmarks per face.

- ``yunet``: libfacedetection's YuNet from the ``yuface`` package; its weights
  are compiled into the wheel, so it needs no download and works offline.
- ``retinaface_resnet50`` (what AUTOMATIC1111 uses) and
  ``retinaface_mobile0.25``: facexlib's RetinaFace networks, with weights found
  in the WebUI's ``models/GFPGAN`` folder or downloaded verified; read with
  the project's own restricted reader, like the CodeFormer weights (no
  pickled code is ever run).

``auto`` (the default) is RetinaFace-ResNet50 where it can be had and YuNet
where it cannot (facexlib missing, weights neither on disk nor
downloadable), said once in the log; a RetinaFace asked for by name that
cannot be had falls back to ``yunet`` with one warning. The detector's
``name`` is always the one that runs (the infotext and the API report it).

Landmark order everywhere: viewer's left eye, right eye, nose tip, left and
right mouth corner, as (x, y) in image pixels.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..acceleration import accelerate, cpu_layout
from ..acceleration.folding import fold_batch_norms
from ..errors import MissingDependency, WeightsError
from ..network.weights import read_tensors
from ..options import DETECTORS
from ..storage.model_files import ModelFile, default_cache_dir, download_file, find_model_file

logger = logging.getLogger(__name__)

# facexlib's 0.97 for RetinaFace (what AUTOMATIC1111 uses); YuNet's scores run lower
# and it finds false faces below about 0.75 on large upscaled images.
DEFAULT_CONFIDENCE = {"retinaface_resnet50": 0.97, "retinaface_mobile0.25": 0.97, "yunet": 0.8}
# Detection runs on a copy whose longer side is at most this (YuNet is made for <= 960 px;
# false positives and time grow with size).
DETECTION_MAX_SIDE = 960

RETINAFACE_RESNET50 = ModelFile(
    filename="detection_Resnet50_Final.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
)


def _verify_mobile_detector(path: Path) -> None:
    """No sha256 is published for the MobileNet detector: what the data allows is its exact size (checked by the
    download) and, before the file is kept, every tensor's name and shape against the network's, read safely."""
    try:
        from facexlib.detection.retinaface import RetinaFace
    except ImportError:
        return  # it cannot be used without facexlib anyway; loading checks it when facexlib is there
    expected = RetinaFace(network_name="mobile0.25", half=False, device="cpu").state_dict()
    found = {key.removeprefix("module."): value for key, value in read_weights(path).items()}
    wrong = [key for key, value in expected.items() if key not in found or tuple(found[key].shape) != tuple(value.shape)]
    if wrong or len(found) != len(expected):
        raise WeightsError(f"its tensors are not RetinaFace mobile0.25's ({len(wrong)} missing or of another shape)")


RETINAFACE_MOBILE = ModelFile(
    filename="detection_mobilenet0.25_Final.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
    sha256=None,
    size=1_789_735,
    verify=_verify_mobile_detector,
)


@dataclass(frozen=True)
class Detection:
    """One face as a detector reports it, in the coordinates of the image it was given."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float  # 0..1
    landmarks: np.ndarray  # (5, 2)

    def scaled(self, factor: float) -> Detection:
        return Detection(tuple(v * factor for v in self.box), self.score, self.landmarks * factor)


class YuNetDetector:
    """libfacedetection's YuNet (``yuface``): no download, CPU only."""

    name = "yunet"

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Faces in an RGB uint8 image with score >= ``threshold`` (0..1), best first."""
        try:
            import yuface
        except ImportError:
            raise MissingDependency(
                "the face detector package 'yuface' is not installed (the extension's install.py did not run). "
                "Install it into the WebUI's Python environment: pip install yuface"
            ) from None

        bgr = np.ascontiguousarray(image[:, :, ::-1])
        scores, boxes, landmarks = yuface.detect(bgr, float(threshold))
        found = []
        for score, (x, y, w, h), points in zip(scores, boxes, landmarks, strict=True):
            if score / 100.0 < threshold:
                continue
            box = (float(x), float(y), float(x + w), float(y + h))
            found.append(Detection(box, float(score) / 100.0, points.astype(np.float64).reshape(5, 2)))
        return sorted(found, key=lambda d: -d.score)


class RetinaFaceDetector:
    """facexlib's RetinaFace with weights loaded here (safely, from a verified file), its batch norms folded and
    its plain 3x3 convolutions on the Winograd kernel where it applies (``use_winograd``, the restorer's
    ``fast_conv``): most of ResNet50's stride-1 3x3 convolutions and the FPN's and SSH's."""

    def __init__(self, network: str, weights: Path, device: torch.device, *, use_winograd: bool = True) -> None:
        from facexlib.detection.retinaface import RetinaFace

        self.name = f"retinaface_{network}"
        state = read_weights(weights)
        state = {key.removeprefix("module."): value for key, value in state.items()}
        model = RetinaFace(network_name=network, half=False, device=device)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise WeightsError(f"{weights} is not the {self.name} detector's weights ({str(error).splitlines()[0]}).") from None
        model = model.eval().requires_grad_(False)
        fold_batch_norms(model)  # same detections, a seventh less work
        self.model = accelerate(model, winograd_kernel=use_winograd)

    def use_winograd(self, enabled: bool) -> None:
        """Whether the CPU float32 3x3 convolutions run on the compiled Winograd kernel (the restorer's ``fast_conv``)."""
        accelerate(self.model, winograd_kernel=enabled)

    def to(self, device: torch.device) -> None:
        """Move the network; facexlib's RetinaFace also keeps the device it sends its inputs to."""
        self.model.to(device)
        self.model.device = torch.device(device)
        cpu_layout(self.model)

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        with torch.inference_mode():
            rows = self.model.detect_faces(bgr, conf_threshold=float(threshold))
        found = [
            Detection(tuple(float(v) for v in row[:4]), float(row[4]), row[5:15].astype(np.float64).reshape(5, 2)) for row in rows
        ]
        return sorted(found, key=lambda d: -d.score)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A facexlib network's state dict (some files wrap it in ``params``), read without running pickled code."""
    state = read_tensors(path)
    state = state.get("params", state)
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict.")
    return state


def model_file_path(model: ModelFile, model_dirs: Sequence[str | os.PathLike], download: bool) -> Path:
    """A detector or parser weights file: from the given folders or the cache, else downloaded."""
    cache = default_cache_dir()
    found = find_model_file(model, [*model_dirs, cache])
    if found is not None:
        return found
    if not download:
        raise WeightsError(f"{model.filename} not found in {', '.join(map(str, [*model_dirs, cache]))}.")
    return download_file(model, Path(model_dirs[0]) if model_dirs else cache)


_fallback_warned = threading.Event()


def retinaface_of(name: str) -> str | None:
    """The RetinaFace detector that ``name`` asks for first (``auto``: ResNet50), or None for YuNet."""
    if name == "auto":
        return "retinaface_resnet50"
    return name if name.startswith("retinaface_") else None


def create_detector(
    name: str,
    *,
    device: torch.device,
    model_dirs: Sequence[str | os.PathLike] = (),
    download: bool = True,
    use_winograd: bool = True,
) -> YuNetDetector | RetinaFaceDetector:
    """Build a detector by name; RetinaFace falls back to YuNet when it cannot be had (one warning, or for
    ``auto`` one info line). ``use_winograd``: RetinaFace's convolutions on the compiled kernel."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    wanted = retinaface_of(name)
    if wanted is None:
        return YuNetDetector()
    network = wanted.removeprefix("retinaface_")
    model = RETINAFACE_RESNET50 if network == "resnet50" else RETINAFACE_MOBILE
    try:
        return RetinaFaceDetector(network, model_file_path(model, model_dirs, download), device, use_winograd=use_winograd)
    except (WeightsError, ImportError) as error:
        if not _fallback_warned.is_set():
            _fallback_warned.set()
            reason = str(error).split(". Download ")[0]  # the file's own hint follows below
            log = logger.info if name == "auto" else logger.warning
            log(
                "Face detector %s is unavailable (%s); using the built-in YuNet detector instead. "
                "To use %s, put %s (from %s) in %s.",
                wanted,
                reason,
                wanted,
                model.filename,
                model.url,
                model_dirs[0] if model_dirs else default_cache_dir(),
            )
        return YuNetDetector()


def detect_faces(detector, image: np.ndarray, threshold: float, max_side: int = DETECTION_MAX_SIDE) -> list[Detection]:
    """Detect in any of the pipeline's images (uint8/uint16; gray, RGB or RGBA).

    The detector sees an RGB uint8 copy whose longer side is at most
    ``max_side`` (made without a full-size float or 8-bit copy); coordinates
    come back in ``image`` pixels.
    """
    import cv2

    height, width = image.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    view = image
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        view = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if view.dtype == np.uint16:
        view = (view >> 8).astype(np.uint8)
    if view.ndim == 2:
        view = cv2.cvtColor(view, cv2.COLOR_GRAY2RGB)
    elif view.shape[2] == 4:
        view = np.ascontiguousarray(view[:, :, :3])
    found = detector.detect(view, threshold)
    return [d.scaled(1.0 / factor) for d in found] if factor < 1.0 else found
