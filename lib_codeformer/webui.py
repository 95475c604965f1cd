"""What the WebUI extension does, without touching any WebUI module.

The glue script (``scripts/codeformer_postprocess.py``) reads the host's
settings, devices and job state and hands them over as plain values and
callables; everything here is testable without a WebUI.

``ExtensionRuntime`` keeps one ``FaceRestorer`` per process (models load once,
on first use) and turns every failure into a logged, user-visible message with
the input image returned unchanged: face restoration must never break
generation or lose an image.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import options as option_specs

logger = logging.getLogger("codeformer")

SETTINGS_PREFIX = "codeformer_"
# Options written into the infotext when they differ from the default (fidelity always is).
INFOTEXT_OPTIONS = ("faces", "max_faces", "min_face_size", "max_face_size", "blend", "mask", "color_correction", "confidence")
INFOTEXT_KEYS = {spec.key: f"CodeFormer {spec.key.replace('_', ' ')}" for spec in option_specs.OPTIONS}
# Settings beyond the restore options.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class HostServices:
    """What the host provides, as plain values and callables."""

    settings: Callable[[], dict[str, Any]]  # current settings (option keys, weights_path, device, unload, max_pixels, fast_conv)
    device: Callable[[], str]  # the device the host assigns to face restoration
    model_dirs: Sequence[str] = ()  # where CodeFormer weights are looked for (models/Codeformer)
    detector_model_dirs: Sequence[str] = ()  # RetinaFace / ParseNet weights (models/GFPGAN)
    prepare_memory: Callable[[], None] = lambda: None  # free VRAM before moving a model to the GPU (Forge)
    release_memory: Callable[[], None] = lambda: None  # after a model left the GPU


@dataclass
class Outcome:
    """The result of one restoration as the WebUI reports it."""

    image: np.ndarray
    faces: list = field(default_factory=list)  # the pipeline's FaceResult for every face found
    detector: str = ""
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def faces_found(self) -> int:
        return len(self.faces)

    @property
    def faces_restored(self) -> int:
        return sum(face.restored for face in self.faces)

    def infotext(self) -> dict[str, Any]:
        """Parameters for the image's infotext (txt2img/img2img) or the Extras info."""
        if self.error is not None:
            return {"CodeFormer": f"not applied: {self.error}"}
        info: dict[str, Any] = {
            INFOTEXT_KEYS["fidelity"]: round(float(self.values.get("fidelity", option_specs.default("fidelity"))), 3),
            "CodeFormer restored": f"{self.faces_restored}/{self.faces_found}",
            "CodeFormer detector": self.detector,
        }
        defaults = option_specs.defaults()
        for key in INFOTEXT_OPTIONS:
            value = self.values.get(key)
            if key in self.values and value != defaults[key]:
                info[INFOTEXT_KEYS[key]] = round(value, 3) if isinstance(value, float) else value
        return info


class ExtensionRuntime:
    """One per WebUI process: the shared restorer and the error reporting."""

    def __init__(self, services: HostServices) -> None:
        self.services = services
        self._lock = threading.RLock()
        self._restorer = None
        self._restorer_key: tuple | None = None
        self._reported: set[str] = set()
        self._last = threading.local()
        # Host objects that must outlive a Reload UI (which imports the glue script again).
        self.host_state: dict[str, Any] = {}

    def begin_generation(self, panel_values: dict[str, Any] | None) -> None:
        """The per-generation panel is on (its values) or off (None) for this thread's generation."""
        self._last.panel = panel_values

    def panel(self) -> dict[str, Any] | None:
        return getattr(self._last, "panel", None)

    def remember(self, outcome: Outcome) -> None:
        """Keep the last outcome of this thread, for the infotext of the image being generated."""
        self._last.outcome = outcome

    def take_last(self) -> Outcome | None:
        outcome = getattr(self._last, "outcome", None)
        self._last.outcome = None
        return outcome

    def settings(self) -> dict[str, Any]:
        values = dict(self.services.settings())
        restore_values = option_specs.normalise({k: v for k, v in values.items() if k in option_specs.BY_KEY})
        return {**values, **restore_values}

    def restorer(self, settings: dict[str, Any] | None = None):
        """The shared FaceRestorer, rebuilt only when the device or weights setting changes."""
        from .pipeline import FaceRestorer

        settings = self.settings() if settings is None else settings
        device = settings.get("device") or "auto"
        if device == "auto":
            device = self.services.device()
        weights = settings.get("weights_path") or None
        key = (str(device), weights)
        with self._lock:
            if self._restorer is None or self._restorer_key != key:
                self._restorer = FaceRestorer(
                    weights,
                    detector=option_specs.BY_KEY["detector"].default,
                    device=device,
                    model_dirs=list(self.services.model_dirs),
                    detector_model_dirs=list(self.services.detector_model_dirs),
                )
                self._restorer_key = key
            return self._restorer

    def restore(
        self,
        image: np.ndarray,
        values: dict[str, Any] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Outcome:
        """Restore an RGB(A) uint8 image; never raises: on error the image comes back unchanged."""
        settings = self.settings()
        chosen = option_specs.normalise({**{k: settings[k] for k in option_specs.BY_KEY}, **(values or {})})
        limit = int(settings.get("max_pixels") or option_specs.DEFAULT_MAX_PIXELS)
        height, width = image.shape[:2]
        if height * width > limit:
            message = f"the image is {width} x {height} pixels, over the limit of {limit} (setting 'codeformer_max_pixels')"
            return Outcome(image, error=message, values=chosen)
        try:
            with self._lock:
                restorer = self.restorer(settings)
                _use_fast_convolutions(settings.get("fast_conv", True))
                self._prepare(restorer)
                try:
                    result = restorer.restore(
                        image,
                        progress=progress,
                        should_stop=should_stop,
                        **option_specs.restore_kwargs(chosen),
                    )
                finally:
                    self._after_use(restorer, settings)
        except Exception as error:
            message = self._report(error)
            return Outcome(image, error=message, values=chosen)
        restored = result.image
        if chosen["visibility"] < 1.0 and restored is not image:
            restored = _blend(image, restored, chosen["visibility"])
        return Outcome(restored, result.faces, result.detector, values=chosen)

    def _prepare(self, restorer) -> None:
        if restorer.device.type != "cpu":
            self.services.prepare_memory()
            if restorer._network is not None:
                restorer._network.to(restorer.device)

    def _after_use(self, restorer, settings: dict[str, Any]) -> None:
        if settings.get("unload") and restorer.device.type != "cpu" and restorer._network is not None:
            restorer._network.to("cpu")
            self.services.release_memory()

    def _report(self, error: Exception) -> str:
        """Log an error once per distinct message (not once per image) and return what the user sees."""
        from .pipeline import is_setup_error

        setup = is_setup_error(error)  # its message says what to do; no traceback needed
        if setup:
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}. The image was left unchanged; see the console for details."
        if message not in self._reported:
            self._reported.add(message)
            logger.error("CodeFormer: %s", message, exc_info=not (setup or isinstance(error, ValueError)))
        return message


_RUNTIME: ExtensionRuntime | None = None


def shared_runtime(services: HostServices) -> ExtensionRuntime:
    """The process's runtime; a Reload UI hands over fresh services but keeps the loaded models."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = ExtensionRuntime(services)
    else:
        _RUNTIME.services = services
    return _RUNTIME


def _use_fast_convolutions(enabled: bool) -> None:
    """The setting "Fast CPU convolutions" (imported here: fastconv imports torch, which start-up must not)."""
    from . import fastconv

    fastconv.set_enabled(bool(enabled))


def _blend(original: np.ndarray, restored: np.ndarray, visibility: float) -> np.ndarray:
    mixed = original.astype(np.float32) * (1.0 - visibility) + restored.astype(np.float32) * visibility
    return np.clip(np.rint(mixed), 0, np.iinfo(original.dtype).max).astype(original.dtype)


def panel_values(args: Sequence[Any]) -> dict[str, Any]:
    """The panel's positional script args (UI order, possibly shorter from the API) as named values."""
    from .webui_ui import PANEL_KEYS

    names = ("enable", *PANEL_KEYS)
    return {name: value for name, value in zip(names, args, strict=False) if value is not None}  # API args may be fewer


def infotext_fields(controls: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(component, infotext key or function) pairs so that PNG Info / "send to" restores the panel.

    The panel counts as used when the parameters hold CodeFormer's but no
    "Face restoration" (which Restore faces writes); absent options reset to
    their defaults.
    """
    fields: list[tuple[Any, Any]] = [
        (controls["enable"], lambda params: INFOTEXT_KEYS["fidelity"] in params and "Face restoration" not in params)
    ]
    for key, component in controls.items():
        if key == "enable":
            continue
        default = option_specs.BY_KEY[key].default
        fallback = 0 if default is None else default
        fields.append((component, lambda params, key=key, fallback=fallback: params.get(INFOTEXT_KEYS[key], fallback)))
    return fields


def settings_keys() -> dict[str, str]:
    """Option key -> WebUI setting name."""
    return {spec.key: SETTINGS_PREFIX + spec.key for spec in option_specs.OPTIONS}
