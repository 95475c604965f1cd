"""The whole job without any WebUI: find faces, restore them in batches, paste them back.

``FaceRestorer`` wires the pieces together: the network (``network``, made
fast by ``acceleration``), detection, selection and compositing
(``faces``), model files (``storage``). It loads its models once, lazily,
and reuses them. ``restore`` never loses the image: an image without faces
comes back bit for bit, a face whose restoration fails stays as it was and is
reported, and every pixel that no face covers keeps its exact value (16-bit
and alpha included).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .acceleration import accelerate, buffers, cpu_layout
from .errors import SetupError, WeightsError
from .faces import compositing, geometry
from .faces.detection import DEFAULT_CONFIDENCE, DETECTION_MAX_SIDE, create_detector, detect_faces, model_file_path
from .faces.parsing import PARSENET, FaceParser
from .faces.pixels import Pixels, is_grayscale, to_pixels
from .faces.selection import FaceResult, choose_faces, face_from_landmarks
from .network.inference import check_precision, restore_aligned
from .network.weights import WeightsSource, load_codeformer
from .options import DEFAULT_DETECTOR, DETECTORS, RestoreOptions
from .storage.model_files import CODEFORMER, WeightsAdvice, default_cache_dir, locate_weights, manual_hint
from .upscaling.base import Upscaler

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]
# The restorer's own face upscaler, where a call names none.
DEFAULT = object()
# A face in a ``restore_many`` call: (index of its image, index of the face among that image's faces).
FaceKey = tuple[int, int]


class FaceFilter(Protocol):
    """Sees each batch of aligned faces (512 x 512 RGB float in [0, 1]) just before and after the network.

    Video restoration uses it to hold a face steady over time (a temporal
    filter per tracked face, ``lib_codeformer.video.smoothing``); a single
    image has no use for it.
    """

    def network_input(self, keys: list[FaceKey], crops: list[np.ndarray]) -> list[np.ndarray]: ...

    def network_output(self, keys: list[FaceKey], restored: list[np.ndarray | None]) -> list[np.ndarray | None]: ...


@dataclass
class RestoreResult:
    image: np.ndarray | Image.Image  # same size and dtype as the input; same mode where it can hold the result
    faces: list[FaceResult] = field(default_factory=list)
    detector: str = ""
    # Seconds spent in each stage: detect, network (CodeFormer), paste (masks, warps, compositing).
    timings: dict[str, float] = field(default_factory=dict)
    # The pixel boxes (x0, y0, x1, y1) that paste-back wrote; everything outside them is the input's.
    changed: list[geometry.Box] = field(default_factory=list)
    # With ``coverage=True``: H x W float32, how much of each pixel comes from restored faces (0..1).
    coverage: np.ndarray | None = None

    @property
    def restored_count(self) -> int:
        return sum(face.restored for face in self.faces)


@dataclass
class _Canvas:
    """One image being restored: its pixels, the copy the faces are pasted into, whether it stays gray."""

    pixels: Pixels
    output: np.ndarray
    gray: bool
    changed: list[geometry.Box] = field(default_factory=list)
    coverage: np.ndarray | None = None

    def result(self, faces: list[FaceResult], detector: str, timings: dict[str, float]) -> RestoreResult:
        return RestoreResult(self.pixels.give_back(self.output), faces, detector, timings, self.changed, self.coverage)


def is_setup_error(error: Exception) -> bool:
    """Errors about the set-up (missing weights or packages): retrying face by face cannot help,
    and their message already says what to do."""
    return isinstance(error, SetupError)


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


def checked_device(device: torch.device | str | None) -> torch.device:
    """The device to run on; ValueError naming what is wrong with one that cannot be used here."""
    if device is None:
        return default_device()
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {error}") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (no NVIDIA GPU, or a CPU-only torch)")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: Apple's MPS is not available here")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return chosen


class FaceRestorer:
    """Find, restore and paste back faces with CodeFormer.

    ``weights``: anything ``load_codeformer`` takes, an already loaded
    network (shared, not copied), or None to locate (and if needed
    download) the official file, looking in ``model_dirs`` (the
    WebUI's ``models/Codeformer``) first. Detector and parser weights are
    looked for in ``detector_model_dirs`` (the WebUI's ``models/GFPGAN``).
    ``fast_conv``: the compiled Winograd kernel on the CPU (see
    ``lib_codeformer.acceleration``); it can be changed later.
    ``weights_advice``: how the front end in use lets a user give the
    weights, so that a missing or broken file's message says what to do there.
    ``face_upscaler``: enlarges restored faces that are larger on the image
    than CodeFormer's 512 px crop (``lib_codeformer.upscaling``); None: off.
    """

    def __init__(
        self,
        weights: WeightsSource | torch.nn.Module | None = None,
        *,
        detector: str = DEFAULT_DETECTOR,
        device: torch.device | str | None = None,
        model_dirs: Sequence[str | os.PathLike] = (),
        detector_model_dirs: Sequence[str | os.PathLike] = (),
        batch_size: int | None = None,
        precision: str = "fp32",
        download: bool = True,
        detection_max_side: int = DETECTION_MAX_SIDE,
        fast_conv: bool = True,
        weights_advice: WeightsAdvice | None = None,
        face_upscaler: Upscaler | None = None,
    ) -> None:
        problems = []
        if detector not in DETECTORS:
            problems.append(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        try:
            check_precision(precision, checked_device(device))
        except ValueError as error:
            problems.append(str(error))
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            problems.append(f"batch_size must be a whole number >= 1; got {batch_size!r}")
        if isinstance(detection_max_side, bool) or not isinstance(detection_max_side, int) or detection_max_side < 32:
            problems.append(f"detection_max_side must be a whole number >= 32; got {detection_max_side!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.weights = weights
        self.detector_name = detector
        self.device = checked_device(device)
        self.model_dirs = list(model_dirs)
        self.detector_model_dirs = list(detector_model_dirs)
        self._batch_size_given = batch_size is not None
        self.batch_size = batch_size if batch_size is not None else default_batch_size(self.device)
        self.precision = precision
        self.download = download
        self.detection_max_side = detection_max_side
        self._fast_conv = bool(fast_conv)
        self.weights_advice = weights_advice or WeightsAdvice()
        self.face_upscaler = face_upscaler
        self._lock = threading.RLock()
        # One network batch at a time: each uses every core (or the GPU); detection and paste-back run alongside.
        self._network_lock = threading.Lock()
        self._network: torch.nn.Module | None = None
        self._detectors: dict[str, Any] = {}
        self._parser: FaceParser | None = None
        self._box_masks: dict[float, np.ndarray] = {}

    # Models, each loaded once on first use.

    @property
    def network(self) -> torch.nn.Module:
        with self._lock:
            if self._network is None:
                source = self.weights
                # An already loaded network is shared, not copied.
                network = source if isinstance(source, torch.nn.Module) else self._load_network(source)
                self._network = accelerate(network, winograd_kernel=self._fast_conv)
            return self._network

    def _load_network(self, source: WeightsSource | None) -> torch.nn.Module:
        advice = self.weights_advice
        if source is None or isinstance(source, (str, os.PathLike)):
            source = locate_weights(source, model_dirs=self.model_dirs, download=self.download, advice=advice)
        try:
            return load_codeformer(source, device=self.device)
        except WeightsError as error:
            folder = Path(self.model_dirs[0]) if self.model_dirs else default_cache_dir()
            raise WeightsError(f"{error} {manual_hint(CODEFORMER, folder, advice.alternative)}") from None

    @property
    def fast_conv(self) -> bool:
        return self._fast_conv

    @fast_conv.setter
    def fast_conv(self, enabled: bool) -> None:
        with self._lock:
            self._fast_conv = bool(enabled)
            if self._network is not None:
                accelerate(self._network, winograd_kernel=self._fast_conv)
            if self._parser is not None:
                self._parser.use_winograd(self._fast_conv)
            for detector in self._detectors.values():
                if hasattr(detector, "use_winograd"):
                    detector.use_winograd(self._fast_conv)

    def detector(self, name: str | None = None):
        name = name or self.detector_name
        with self._lock:
            if name not in self._detectors:
                self._detectors[name] = create_detector(
                    name,
                    device=self.device,
                    model_dirs=self.detector_model_dirs,
                    download=self.download,
                    use_winograd=self._fast_conv,
                )
            return self._detectors[name]

    @property
    def parser(self) -> FaceParser:
        with self._lock:
            if self._parser is None:
                weights = model_file_path(PARSENET, self.detector_model_dirs, self.download)
                self._parser = FaceParser(weights, self.device, use_winograd=self._fast_conv)
            return self._parser

    def to(self, device: torch.device | str) -> FaceRestorer:
        """Move every loaded model (network, detectors, parser) to ``device``; later loads go there too.

        ``device`` is checked as the constructor checks it (ValueError); the
        memory layout that is fastest there is applied again, and the batch
        size, unless one was given, is chosen anew for the device.
        """
        target = checked_device(device)
        check_precision(self.precision, target)
        with self._lock:
            self.device = target
            if not self._batch_size_given:
                self.batch_size = default_batch_size(target)
            if self._network is not None:
                cpu_layout(self._network.to(target))
            for detector in self._detectors.values():
                if hasattr(detector, "to"):
                    detector.to(self.device)
            if self._parser is not None:
                self._parser.to(self.device)
        return self

    def unload(self) -> None:
        """Drop the loaded models (they are loaded again when next needed) and the recycled working memory."""
        with self._lock:
            self._network, self._parser = None, None
            self._detectors.clear()
        buffers.pool.release()

    # The job.

    def restore(
        self,
        image: np.ndarray | Image.Image,
        *,
        landmarks: Sequence[np.ndarray] | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
        coverage: bool = False,
        face_upscaler: Upscaler | object | None = DEFAULT,
        **options: Any,
    ) -> RestoreResult:
        """Restore the faces of ``image``; see ``RestoreOptions`` for the keyword options.

        ``landmarks``: the faces' 5 landmarks, (5, 2) each, when they are
        already known (detection is then skipped). ``progress(done, total)``
        is called after each batch of faces; ``should_stop()`` is asked
        between batches (faces not yet restored stay as they were).
        ``coverage``: also return where faces were pasted, and how strongly
        (``RestoreResult.coverage``; a ComfyUI MASK, for one).
        ``face_upscaler``: for this call instead of the restorer's (None: no
        enlarging); a face larger on the image than the 512 px crop is
        enlarged by it to its size there before it is pasted back
        (``lib_codeformer.upscaling``); smaller faces cost nothing more.
        """
        given = None if landmarks is None else [landmarks]
        results = self.restore_many(
            [image],
            landmarks=given,
            progress=progress,
            should_stop=should_stop,
            coverage=coverage,
            face_upscaler=face_upscaler,
            **options,
        )
        return results[0]

    def restore_many(
        self,
        images: Sequence[np.ndarray | Image.Image],
        *,
        landmarks: Sequence[Sequence[np.ndarray] | None] | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
        face_filter: FaceFilter | None = None,
        coverage: bool = False,
        face_upscaler: Upscaler | object | None = DEFAULT,
        **options: Any,
    ) -> list[RestoreResult]:
        """Restore several images at once: their faces share the network's batches (video frames, for one).

        ``landmarks``: per image, its faces' landmarks or None to detect them.
        ``face_filter``: sees the aligned faces before and after the network
        (see ``FaceFilter``). Each result's ``timings`` are those of the whole call.
        """
        settings = RestoreOptions.checked(**options)
        if landmarks is not None and len(landmarks) != len(images):
            raise ValueError(f"landmarks are given for {len(landmarks)} images, but there are {len(images)}")
        canvases = [self._canvas(image, settings, coverage) for image in images]
        timings = {"detect": 0.0, "network": 0.0, "paste": 0.0}
        if settings.aligned:
            faces = self._restore_aligned(canvases, settings, progress, should_stop, timings)
            return [canvas.result(found, "none (aligned input)", timings) for canvas, found in zip(canvases, faces, strict=True)]
        started = time.perf_counter()
        found_faces, detector_names, work, keys = [], [], [], []
        for index, canvas in enumerate(canvases):
            given = None if landmarks is None else landmarks[index]
            faces, name = self._find_faces(canvas.pixels, given, settings)
            found_faces.append(faces)
            detector_names.append(name)
            chosen = choose_faces(
                faces,
                canvas.pixels.array.shape[:2],
                faces_wanted=settings.faces,
                max_faces=settings.max_faces,
                min_face_size=settings.min_face_size,
                max_face_size=settings.max_face_size,
            )
            work += [(canvas, faces[i]) for i in chosen]
            keys += [(index, i) for i in chosen]
        timings["detect"] = time.perf_counter() - started
        upscaler = self.face_upscaler if face_upscaler is DEFAULT else face_upscaler
        self._restore_into(work, settings, progress, should_stop, timings, keys, face_filter, upscaler)
        return [
            canvas.result(faces, name, timings) for canvas, faces, name in zip(canvases, found_faces, detector_names, strict=True)
        ]

    def _canvas(self, image: np.ndarray | Image.Image, settings: RestoreOptions, coverage: bool = False) -> _Canvas:
        pixels = to_pixels(image)
        gray = settings.keep_grayscale and is_grayscale(pixels.array)
        covered = np.zeros(pixels.array.shape[:2], np.float32) if coverage else None
        return _Canvas(pixels, pixels.array.copy(), gray, coverage=covered)

    def _find_faces(
        self, pixels: Pixels, landmarks: Sequence[np.ndarray] | None, settings: RestoreOptions
    ) -> tuple[list[FaceResult], str]:
        if landmarks is not None:
            return [face_from_landmarks(np.asarray(points, dtype=np.float64)) for points in landmarks], "given landmarks"
        detector = self.detector(settings.detector)
        if pixels.is_empty:
            return [], detector.name
        threshold = settings.confidence if settings.confidence is not None else DEFAULT_CONFIDENCE[detector.name]
        detections = detect_faces(detector, pixels.array, threshold, self.detection_max_side)
        return [FaceResult(d.box, d.score, d.landmarks) for d in detections], detector.name

    def _restore_into(
        self,
        work: list[tuple[_Canvas, FaceResult]],
        settings: RestoreOptions,
        progress: Progress | None,
        should_stop: ShouldStop | None,
        timings: dict[str, float],
        keys: list[FaceKey],
        face_filter: FaceFilter | None,
        upscaler: Upscaler | None = None,
    ) -> None:
        """Restore each (canvas, face) pair in batches and paste it into its canvas."""
        total = len(work)
        for start in range(0, total, self.batch_size):
            if should_stop is not None and should_stop():
                for _, face in work[start:]:
                    face.reason = "interrupted"
                return
            started = time.perf_counter()
            batch = work[start : start + self.batch_size]
            aligns = [geometry.alignment_matrix(face.landmarks) for _, face in batch]
            crops = [compositing.crop_face(canvas.pixels, matrix) for (canvas, _), matrix in zip(batch, aligns, strict=True)]
            batch_keys = keys[start : start + self.batch_size]
            network_input = crops if face_filter is None else face_filter.network_input(batch_keys, crops)
            network_started = time.perf_counter()
            restored = self._run_network(network_input, settings.fidelity, [face for _, face in batch])
            network_ended = time.perf_counter()
            if face_filter is not None:
                restored = face_filter.network_output(batch_keys, restored)
            masks = self._masks(restored, settings)
            for (canvas, face), matrix, crop, result, mask in zip(batch, aligns, crops, restored, masks, strict=True):
                if result is not None:
                    self._paste_face(canvas, face, result, crop, mask, matrix, settings, upscaler)
            timings["network"] += network_ended - network_started
            timings["paste"] += time.perf_counter() - started - (network_ended - network_started)
            if progress is not None:
                progress(min(start + self.batch_size, total), total)

    @staticmethod
    def _paste_face(
        canvas: _Canvas,
        face: FaceResult,
        restored: np.ndarray,
        crop: np.ndarray,
        mask: np.ndarray,
        matrix: np.ndarray,
        settings: RestoreOptions,
        upscaler: Upscaler | None = None,
    ) -> None:
        try:
            inverse = geometry.invert_affine(matrix)
            restored, crop = _enlarged(face, restored, crop, geometry.scale_of(inverse), upscaler)
            finished = compositing.finish_face(restored, crop, color_correction=settings.color_correction, gray=canvas.gray)
            box = compositing.paste(canvas.output, finished, mask * settings.blend, inverse, canvas.pixels, canvas.coverage)
        except Exception as error:  # one face's failure never loses the image
            logger.exception("pasting a restored face failed")
            face.reason = f"paste-back failed: {error}"
            return
        if box is None:
            face.reason = "outside the image"
            return
        face.restored = True
        canvas.changed.append(box)

    def _run_network(self, crops: list[np.ndarray], fidelity: float, faces: list[FaceResult]) -> list[np.ndarray | None]:
        """Restore a batch; if the batch fails, each face alone, so one bad face costs only itself."""
        try:
            network = self.network
            with self._network_lock:
                restored = restore_aligned(network, _network_in(crops), fidelity, precision=self.precision)
            return _network_out(restored)
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
        present = [face for face in restored if face is not None]
        if settings.mask == "box" or not present:
            return [box] * len(restored)
        parser = self.parser
        with self._network_lock:
            parsed = iter(parser.face_masks(_network_in(present)))
        return [box if face is None else compositing.parsing_mask(next(parsed), box) for face in restored]

    def _restore_aligned(
        self,
        canvases: list[_Canvas],
        settings: RestoreOptions,
        progress: Progress | None,
        should_stop: ShouldStop | None,
        timings: dict[str, float],
    ) -> list[list[FaceResult]]:
        """Each image is one aligned face: resized to 512 x 512 (each side on its own), restored in batches like
        detected faces (progress, stop and timings alike), resized back and blended over the whole image."""
        size = geometry.FACE_SIZE
        faces: list[list[FaceResult]] = []
        work = []
        for canvas in canvases:
            height, width = canvas.pixels.array.shape[:2]
            if canvas.pixels.is_empty:
                faces.append([])
                continue
            landmarks = geometry.FFHQ_TEMPLATE_512 * (width / size, height / size)
            face = FaceResult((0.0, 0.0, float(width), float(height)), 1.0, landmarks)
            faces.append([face])
            work.append((canvas, face))
        total = len(work)
        for start in range(0, total, self.batch_size):
            if should_stop is not None and should_stop():
                for _, face in work[start:]:
                    face.reason = "interrupted"
                break
            started = time.perf_counter()
            batch = work[start : start + self.batch_size]
            crops = [compositing.resize_each_side(_aligned_pixels(canvas), size, size) for canvas, _ in batch]
            network_started = time.perf_counter()
            restored = self._run_network(crops, settings.fidelity, [face for _, face in batch])
            network_seconds = time.perf_counter() - network_started
            for (canvas, face), crop, result in zip(batch, crops, restored, strict=True):
                if result is not None:
                    self._paste_aligned(canvas, face, result, crop, settings)
            timings["network"] += network_seconds
            timings["paste"] += time.perf_counter() - started - network_seconds
            if progress is not None:
                progress(min(start + self.batch_size, total), total)
        return faces

    @staticmethod
    def _paste_aligned(
        canvas: _Canvas, face: FaceResult, restored: np.ndarray, crop: np.ndarray, settings: RestoreOptions
    ) -> None:
        pixels = canvas.pixels
        height, width = pixels.array.shape[:2]
        try:
            finished = compositing.finish_face(restored, crop, color_correction=settings.color_correction, gray=canvas.gray)
            finished = compositing.resize_each_side(finished, width, height)
            weight = np.full((height, width), settings.blend, np.float32)
            compositing.blend_into(canvas.output, finished, weight, pixels)
            if canvas.coverage is not None:
                compositing.add_coverage(canvas.coverage, weight)
        except Exception as error:  # one face's failure never loses the image
            logger.exception("pasting a restored face failed")
            face.reason = f"paste-back failed: {error}"
            return
        canvas.changed.append((0, 0, width, height))
        face.restored = True


def _aligned_pixels(canvas: _Canvas) -> np.ndarray:
    return compositing.as_rgb_float(canvas.pixels, canvas.pixels.array)


def _enlarged(
    face: FaceResult, restored: np.ndarray, crop: np.ndarray, scale: float, upscaler: Upscaler | None
) -> tuple[np.ndarray, np.ndarray]:
    """The restored face enlarged by ``upscaler`` to its size on the image where that is larger than the crop
    (``scale`` > 1), with the crop resized alike (for colour statistics); else both as they are. An upscaler
    that fails leaves the face as without one, and says so on the face."""
    if upscaler is None or scale <= 1.0:
        return restored, crop
    import cv2

    from .upscaling.base import UpscalerError, enlarge

    size = int(np.ceil(geometry.FACE_SIZE * scale))
    try:
        enlarged = enlarge(upscaler, restored, size, size)
    except UpscalerError as error:
        if str(error) not in _reported_upscaler_errors:
            _reported_upscaler_errors.add(str(error))
            logger.warning("%s; that face is pasted without enlarging", error)
        face.note = f"not enlarged: {error}"
        return restored, crop
    face.upscaled = size / geometry.FACE_SIZE
    return enlarged, cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)


# Upscaler failures already logged (once each, not once per face).
_reported_upscaler_errors: set[str] = set()


def _network_in(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).mul(2.0).sub(1.0).contiguous()


def _network_out(images: torch.Tensor) -> list[np.ndarray]:
    return list(((images + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy())
