"""The whole job without any WebUI: find faces, restore them in batches, paste them back.

``FaceRestorer`` loads its models once, lazily, and reuses them. ``restore``
never loses the image: an image without faces comes back bit for bit, a face
whose restoration fails stays as it was and is reported, and every pixel that
no face covers keeps its exact value (16-bit and alpha included).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from . import geometry
from .detection import (
    DEFAULT_CONFIDENCE,
    DETECTION_MAX_SIDE,
    PARSENET,
    FaceParser,
    MissingDependency,
    create_detector,
    detect_faces,
    model_file_path,
)
from .download import locate_weights
from .files import pillow_pixels
from .inference import PRECISIONS, restore_aligned
from .options import DETECTORS, FACE_SELECTIONS, MASKS, default
from .weights import WeightsError, WeightsSource, load_codeformer

logger = logging.getLogger(__name__)

# Grey that fills the parts of a face crop outside the image (the value facexlib uses).
OUTSIDE_FILL = (135, 133, 132)


@dataclass(frozen=True)
class RestoreOptions:
    """Everything ``FaceRestorer.restore`` can be told; the defaults are what most photos want.

    The user-facing options' defaults are those of ``options.OPTIONS`` (shown in
    every front end); ``feather``, ``aligned`` and ``detector`` are the pipeline's own.
    """

    fidelity: float = default("fidelity")  # w: 0 = best quality (codebook), 1 = most faithful to the input
    confidence: float | None = default("confidence")  # detection threshold 0..1; None: the detector's default
    min_face_size: int = default("min_face_size")  # ignore faces smaller than this (longer box side, pixels)
    max_face_size: int | None = default("max_face_size")  # ignore faces larger than this
    faces: str = default("faces")  # which faces: all, largest, center (the one nearest the image centre)
    max_faces: int | None = default("max_faces")  # at most this many, the largest first
    blend: float = default("blend")  # 1: the restored face; 0.5: half restored, half original
    mask: str = default("mask")  # paste-back mask: box (soft feathered square) or parsing (face parts only)
    feather: float = 0.1  # width of the box mask's soft edge, as a fraction of the face
    color_correction: bool = default("color_correction")  # give the restored face the original face's colour statistics
    keep_grayscale: bool = default("keep_grayscale")  # a grayscale photo (also R = G = B) comes back grayscale
    aligned: bool = False  # the input is already an aligned face: skip detection and paste-back
    detector: str | None = None  # override the restorer's detector for this call

    def validated(self) -> RestoreOptions:
        problems = []
        if not 0.0 <= self.fidelity <= 1.0:
            problems.append(f"fidelity must be in [0, 1] (got {self.fidelity})")
        if self.confidence is not None and not 0.0 < self.confidence <= 1.0:
            problems.append(f"confidence must be in (0, 1] (got {self.confidence})")
        if self.min_face_size < 0:
            problems.append(f"min_face_size must be >= 0 (got {self.min_face_size})")
        if self.max_face_size is not None and self.max_face_size < max(1, self.min_face_size):
            problems.append(f"max_face_size must be >= min_face_size and > 0 (got {self.max_face_size})")
        if self.faces not in FACE_SELECTIONS:
            problems.append(f"faces must be one of {', '.join(FACE_SELECTIONS)} (got {self.faces!r})")
        if self.max_faces is not None and self.max_faces < 1:
            problems.append(f"max_faces must be >= 1 (got {self.max_faces})")
        if not 0.0 <= self.blend <= 1.0:
            problems.append(f"blend must be in [0, 1] (got {self.blend})")
        if self.mask not in MASKS:
            problems.append(f"mask must be one of {', '.join(MASKS)} (got {self.mask!r})")
        if not 0.0 < self.feather <= 0.5:
            problems.append(f"feather must be in (0, 0.5] (got {self.feather})")
        if self.detector is not None and self.detector not in DETECTORS:
            problems.append(f"detector must be one of {', '.join(DETECTORS)} (got {self.detector!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass
class FaceResult:
    """One face found in the image, and what became of it."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    score: float
    landmarks: np.ndarray  # (5, 2) in image pixels
    restored: bool = False
    reason: str | None = None  # why it was not restored (filtered out, or the error)

    @property
    def size(self) -> float:
        """The longer side of the box, in pixels (what the face size limits compare)."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass
class RestoreResult:
    image: np.ndarray | Image.Image  # same size, mode and dtype as the input
    faces: list[FaceResult] = field(default_factory=list)
    detector: str = ""
    # Seconds spent in each stage: detect, network (CodeFormer), paste (masks, warps, compositing).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def restored_count(self) -> int:
        return sum(face.restored for face in self.faces)


@dataclass
class _Pixels:
    """An input image as an array, and how to give it back in its own form."""

    array: np.ndarray  # H x W (gray) or H x W x C with C in (3, 4)
    from_pil: bool  # give back a PIL image (of the array's mode), else an array of the input's shape

    @property
    def max_value(self) -> float:
        return 65535.0 if self.array.dtype == np.uint16 else 255.0

    @property
    def is_gray_array(self) -> bool:
        return self.array.ndim == 2


def _to_pixels(image: np.ndarray | Image.Image) -> _Pixels:
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            return _Pixels(np.asarray(image).astype(np.uint16), from_pil=True)
        return _Pixels(pillow_pixels(image), from_pil=True)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array or a PIL image, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"images must be uint8 or uint16 (got {image.dtype})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"expected H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); got shape {image.shape}")
    return _Pixels(image, from_pil=False)


def _from_pixels(array: np.ndarray, pixels: _Pixels, original: np.ndarray | Image.Image) -> np.ndarray | Image.Image:
    if pixels.from_pil:
        return Image.fromarray(array)  # uint16 2-D arrays become I;16
    return array.reshape(original.shape)  # an H x W x 1 input comes back H x W x 1


def is_grayscale(array: np.ndarray, rows_per_chunk: int = 256) -> bool:
    """True for a one-channel image or one whose R, G and B are equal everywhere (checked in row chunks)."""
    if array.ndim == 2:
        return True
    for start in range(0, array.shape[0], rows_per_chunk):
        chunk = array[start : start + rows_per_chunk]
        if not (np.array_equal(chunk[:, :, 0], chunk[:, :, 1]) and np.array_equal(chunk[:, :, 0], chunk[:, :, 2])):
            return False
    return True


def default_batch_size(device: torch.device) -> int:
    """Faces per network call: a few on the CPU (batching saves little there), by free memory on a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(16, free // (1200 * 2**20))))
    return 2 if device.type == "cpu" else 4


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class FaceRestorer:
    """Find, restore and paste back faces with CodeFormer.

    ``weights``: anything ``load_codeformer`` takes, an already loaded
    network (shared, not copied), or None to locate (and if needed
    download) the official file, looking in ``model_dirs`` (the
    WebUI's ``models/Codeformer``) first. Detector and parser weights are
    looked for in ``detector_model_dirs`` (the WebUI's ``models/GFPGAN``).
    """

    def __init__(
        self,
        weights: WeightsSource | torch.nn.Module | None = None,
        *,
        detector: str = "retinaface_resnet50",
        device: torch.device | str | None = None,
        model_dirs: Sequence[str | os.PathLike] = (),
        detector_model_dirs: Sequence[str | os.PathLike] = (),
        batch_size: int | None = None,
        precision: str = "fp32",
        download: bool = True,
        detection_max_side: int = DETECTION_MAX_SIDE,
    ) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.weights = weights
        self.detector_name = detector
        self.device = torch.device(device) if device is not None else default_device()
        self.model_dirs = list(model_dirs)
        self.detector_model_dirs = list(detector_model_dirs)
        self.batch_size = batch_size if batch_size is not None else default_batch_size(self.device)
        self.precision = precision
        self.download = download
        self.detection_max_side = detection_max_side
        self._lock = threading.RLock()
        self._network = None
        self._detectors: dict[str, Any] = {}
        self._parser: FaceParser | None = None
        self._box_masks: dict[float, np.ndarray] = {}

    # Models, each loaded once on first use.

    @property
    def network(self):
        with self._lock:
            if self._network is None:
                source = self.weights
                if isinstance(source, torch.nn.Module):  # an already loaded network, shared
                    self._network = source
                    return source
                if source is None:
                    source = locate_weights(model_dirs=self.model_dirs, download=self.download)
                self._network = load_codeformer(source, device=self.device)
            return self._network

    def detector(self, name: str | None = None):
        name = name or self.detector_name
        with self._lock:
            if name not in self._detectors:
                self._detectors[name] = create_detector(
                    name, device=self.device, model_dirs=self.detector_model_dirs, download=self.download
                )
            return self._detectors[name]

    @property
    def parser(self) -> FaceParser:
        with self._lock:
            if self._parser is None:
                self._parser = FaceParser(model_file_path(PARSENET, self.detector_model_dirs, self.download), self.device)
            return self._parser

    def unload(self) -> None:
        """Drop the loaded models (they are loaded again when next needed)."""
        with self._lock:
            self._network, self._parser = None, None
            self._detectors.clear()

    # The job.

    def restore(
        self,
        image: np.ndarray | Image.Image,
        *,
        landmarks: Sequence[np.ndarray] | None = None,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **options: Any,
    ) -> RestoreResult:
        """Restore the faces of ``image``; see ``RestoreOptions`` for the keyword options.

        ``landmarks``: the faces' 5 landmarks, (5, 2) each, when they are
        already known (detection is then skipped). ``progress(done, total)``
        is called after each batch of faces; ``should_stop()`` is asked
        between batches (faces not yet restored stay as they were).
        """
        settings = RestoreOptions(**options).validated()
        pixels = _to_pixels(image)
        output = pixels.array.copy()
        gray = settings.keep_grayscale and is_grayscale(pixels.array)
        timings = {"detect": 0.0, "network": 0.0, "paste": 0.0}
        if settings.aligned:
            faces = self._restore_aligned_image(pixels, output, settings, gray)
            return RestoreResult(_from_pixels(output, pixels, image), faces, "none (aligned input)")

        started = time.perf_counter()
        if landmarks is not None:
            faces = [_face_from_landmarks(np.asarray(points, dtype=np.float64)) for points in landmarks]
            detector_name = "given landmarks"
        else:
            detector = self.detector(settings.detector)
            threshold = settings.confidence if settings.confidence is not None else DEFAULT_CONFIDENCE[detector.name]
            detections = detect_faces(detector, pixels.array, threshold, self.detection_max_side)
            faces = [FaceResult(d.box, d.score, d.landmarks) for d in detections]
            detector_name = detector.name
        timings["detect"] = time.perf_counter() - started
        chosen = _choose(faces, settings, pixels.array.shape[:2])
        self._restore_faces(pixels, output, [faces[i] for i in chosen], settings, gray, progress, should_stop, timings)
        return RestoreResult(_from_pixels(output, pixels, image), faces, detector_name, timings)

    def _restore_faces(self, pixels, output, faces, settings, gray, progress, should_stop, timings) -> None:
        total = len(faces)
        for start in range(0, total, self.batch_size):
            if should_stop is not None and should_stop():
                for face in faces[start:]:
                    face.reason = "interrupted"
                return
            started = time.perf_counter()
            batch = faces[start : start + self.batch_size]
            aligns = [geometry.alignment_matrix(face.landmarks) for face in batch]
            crops = [_crop_face(pixels, matrix) for matrix in aligns]
            network_started = time.perf_counter()
            restored = self._run_network(crops, settings.fidelity, batch)
            network_ended = time.perf_counter()
            masks = self._masks(restored, settings)
            for face, matrix, crop, result, mask in zip(batch, aligns, crops, restored, masks, strict=True):
                if result is None:
                    continue
                try:
                    result = _finish_face(result, crop, settings, gray)
                    face.restored = _paste(output, result, mask * settings.blend, geometry.invert_affine(matrix), pixels)
                    if not face.restored:
                        face.reason = "outside the image"
                except Exception as error:  # one face's failure never loses the image
                    logger.exception("pasting a restored face failed")
                    face.reason = f"paste-back failed: {error}"
            timings["network"] += network_ended - network_started
            timings["paste"] += time.perf_counter() - started - (network_ended - network_started)
            if progress is not None:
                progress(min(start + self.batch_size, total), total)

    def _run_network(self, crops: list[np.ndarray], fidelity: float, faces: list[FaceResult]) -> list[np.ndarray | None]:
        """Restore a batch; if the batch fails, each face alone, so one bad face costs only itself."""
        try:
            return _network_out(restore_aligned(self.network, _network_in(crops), fidelity, precision=self.precision))
        except Exception as error:
            if is_setup_error(error):
                raise
            if len(crops) == 1:
                logger.exception("restoring a face failed")
                faces[0].reason = f"restoration failed: {error}"
                return [None]
        results: list[np.ndarray | None] = []
        for crop, face in zip(crops, faces, strict=True):
            results += self._run_network([crop], fidelity, [face])
        return results

    def _masks(self, restored: list[np.ndarray | None], settings: RestoreOptions) -> list[np.ndarray]:
        box = self._box_masks.get(settings.feather)
        if box is None:
            box = self._box_masks[settings.feather] = geometry.feathered_box_mask(geometry.FACE_SIZE, settings.feather)
        if settings.mask == "box":
            return [box] * len(restored)
        present = [face for face in restored if face is not None]
        if not present:
            return [box] * len(restored)
        parsed = iter(self.parser.face_masks(_network_in(present)))
        masks = []
        for face in restored:
            if face is None:
                masks.append(box)
                continue
            soft = cv2.GaussianBlur(next(parsed), (0, 0), sigmaX=11)
            masks.append(cv2.GaussianBlur(soft, (0, 0), sigmaX=11) * box)
        return masks

    def _restore_aligned_image(
        self, pixels: _Pixels, output: np.ndarray, settings: RestoreOptions, gray: bool
    ) -> list[FaceResult]:
        height, width = pixels.array.shape[:2]
        size = geometry.FACE_SIZE
        crop = _as_rgb_float(pixels, pixels.array)
        if (height, width) != (size, size):
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if height > size else cv2.INTER_CUBIC)
        face = FaceResult(
            (0.0, 0.0, float(width), float(height)), 1.0, geometry.FFHQ_TEMPLATE_512 * (width / size, height / size)
        )
        restored = self._run_network([crop], settings.fidelity, [face])[0]
        if restored is None:
            return [face]
        result = _finish_face(restored, crop, settings, gray)
        if (height, width) != (size, size):
            result = cv2.resize(result, (width, height), interpolation=cv2.INTER_AREA if height < size else cv2.INTER_CUBIC)
        _blend_into(output, result, np.full((height, width), settings.blend, np.float32), pixels)
        face.restored = True
        return [face]


def _face_from_landmarks(points: np.ndarray) -> FaceResult:
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2) per face; got {points.shape}")
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    margin = max(x1 - x0, y1 - y0) * 0.6  # the landmarks span the inner face; the box holds all of it
    return FaceResult((x0 - margin, y0 - margin, x1 + margin, y1 + margin), 1.0, points)


def is_setup_error(error: Exception) -> bool:
    """Errors about the set-up (missing weights or packages): retrying face by face cannot help,
    and their message already says what to do."""
    return isinstance(error, (WeightsError, MissingDependency))


def _choose(faces: list[FaceResult], settings: RestoreOptions, shape: tuple[int, int]) -> list[int]:
    candidates = []
    for index, face in enumerate(faces):
        if face.size < settings.min_face_size:
            face.reason = f"smaller than min_face_size ({face.size:.0f} < {settings.min_face_size} px)"
        elif settings.max_face_size is not None and face.size > settings.max_face_size:
            face.reason = f"larger than max_face_size ({face.size:.0f} > {settings.max_face_size} px)"
        else:
            candidates.append(index)
    if settings.faces == "largest":
        candidates = sorted(candidates, key=lambda i: -faces[i].size)[:1]
    elif settings.faces == "center":
        centre = np.array([shape[1] / 2, shape[0] / 2])

        def distance(i: int) -> float:
            box = faces[i].box
            return float(np.hypot(*(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - centre)))

        candidates = sorted(candidates, key=distance)[:1]
    if settings.max_faces is not None:
        candidates = sorted(candidates, key=lambda i: -faces[i].size)[: settings.max_faces]
    chosen = set(candidates)
    for index, face in enumerate(faces):
        if index not in chosen and face.reason is None:
            face.reason = f"not selected (faces={settings.faces}, max_faces={settings.max_faces})"
    return sorted(chosen)


def _crop_face(pixels: _Pixels, matrix: np.ndarray) -> np.ndarray:
    """The aligned 512 x 512 face as RGB float32 in [0, 1]; parts outside the image are grey."""
    size = geometry.FACE_SIZE
    fill = tuple(v * pixels.max_value / 255.0 for v in OUTSIDE_FILL)
    channels = 1 if pixels.is_gray_array else pixels.array.shape[2]
    border = (fill[0],) if channels == 1 else (*fill, pixels.max_value)[:channels]
    crop = cv2.warpAffine(
        pixels.array, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )
    return _as_rgb_float(pixels, crop)


def _as_rgb_float(pixels: _Pixels, crop: np.ndarray) -> np.ndarray:
    crop = crop.astype(np.float32) / pixels.max_value
    if crop.ndim == 2:
        return np.repeat(crop[:, :, None], 3, axis=2)
    return np.ascontiguousarray(crop[:, :, :3])


def _network_in(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).mul(2.0).sub(1.0).contiguous()


def _network_out(images: torch.Tensor) -> list[np.ndarray]:
    return list(((images + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy())


def _skin_weights(size: int = geometry.FACE_SIZE) -> np.ndarray:
    """Where colour statistics are measured: a soft disc over the cheeks, nose and mouth of the template."""
    yy, xx = np.mgrid[0:size, 0:size] / (size / geometry.FACE_SIZE)
    return np.exp(-(((xx - 256) / 90) ** 2 + ((yy - 300) / 90) ** 2)).astype(np.float32)


_SKIN = _skin_weights()


def _finish_face(restored: np.ndarray, original: np.ndarray, settings: RestoreOptions, gray: bool) -> np.ndarray:
    if settings.color_correction:
        restored = match_colors(restored, original, _SKIN)
    if gray:
        luma = restored @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        restored = np.repeat(luma[:, :, None], 3, axis=2)
    return restored


def match_colors(restored: np.ndarray, original: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Give ``restored`` the per-channel mean and spread of ``original`` over the face (weighted by ``weights``)."""
    weight = weights[:, :, None].astype(np.float64)
    total = max(float(weight.sum()), 1e-6)

    def stats(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (face * weight).sum(axis=(0, 1)) / total
        std = np.sqrt(((face - mean) ** 2 * weight).sum(axis=(0, 1)) / total)
        return mean, np.maximum(std, 1e-4)

    restored_mean, restored_std = stats(restored)
    original_mean, original_std = stats(original)
    corrected = (restored - restored_mean) * (original_std / restored_std) + original_mean
    return np.clip(corrected, 0.0, 1.0).astype(np.float32)


def _paste(output: np.ndarray, face: np.ndarray, mask: np.ndarray, face_to_image: np.ndarray, pixels: _Pixels) -> bool:
    """Warp ``face`` back and composite it through ``mask``, touching only the face's box. False if off-image."""
    height, width = output.shape[:2]
    box = geometry.face_box(face_to_image, height, width)
    if box is None:
        return False
    x0, y0, x1, y1 = box
    matrix = geometry.translate(face_to_image, -x0, -y0)
    # A small face: shrink with area averaging first, to 3x its size in the image, so the
    # bilinear warp neither aliases nor blurs (measured round trip error: 1.5/255 mean).
    size = int(np.ceil(geometry.FACE_SIZE * geometry.scale_of(matrix) * 3))
    if size < geometry.FACE_SIZE:
        size = max(size, 8)
        shrink = size / geometry.FACE_SIZE
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.array([[1 / shrink, 0, 0], [0, 1 / shrink, 0], [0, 0, 1]])
    warp = {"dsize": (x1 - x0, y1 - y0), "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    warped_face = cv2.warpAffine(face, matrix, **warp)
    warped_mask = cv2.warpAffine(mask, matrix, **warp)
    region = output[y0:y1, x0:x1]
    _blend_into(region, warped_face, warped_mask, pixels)
    return True


def _blend_into(region: np.ndarray, face: np.ndarray, mask: np.ndarray, pixels: _Pixels) -> None:
    """``region = region + (face - region) * mask`` in float, rounded; where mask is 0 the value stays exact."""
    face = face * pixels.max_value
    if region.ndim == 2:
        target = region
        face = face[:, :, 0]
        weight = mask
    else:
        target = region[:, :, :3]
        weight = mask[:, :, None]
    current = target.astype(np.float32)
    blended = current + (face - current) * weight
    np.rint(blended, out=blended)
    np.clip(blended, 0, pixels.max_value, out=blended)
    target[...] = blended.astype(region.dtype)
