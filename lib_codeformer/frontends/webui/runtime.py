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

from ... import options as option_specs
from ...version import __version__

logger = logging.getLogger("codeformer")

# Which release restored an image, in its infotext and the Extras info (bug reports quote it).
VERSION_KEY = "CodeFormer version"
# Options written into the infotext when they differ from the default (fidelity always is).
INFOTEXT_OPTIONS = ("faces", "max_faces", "min_face_size", "max_face_size", "blend", "mask", "color_correction", "confidence")
INFOTEXT_KEYS = {option.key: option.infotext_key for option in option_specs.OPTIONS}
# The WebUI settings: every option shown there, under its setting name.
SETTING_OPTIONS = option_specs.shown_in(option_specs.SETTINGS)
# What a restoration takes from the settings and the controls.
RESTORE_VALUE_KEYS = (*option_specs.RESTORE_KEYS, "visibility", "face_upscaler")
# The face upscaler's value that means none.
NO_UPSCALER = "None"


class HostUpscaler:
    """One of the WebUI's own upscalers (Lanczos, ESRGAN, Real-ESRGAN, SwinIR, DAT...) as the restorer's face
    upscaler: the host enlarges through its own API, on its own device, with its own tiling."""

    def __init__(self, name: str, upscale: Callable[[np.ndarray, float, str], np.ndarray]) -> None:
        self.name, self._upscale = name, upscale

    def upscale(self, image: np.ndarray, scale: float) -> np.ndarray:
        pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        enlarged = np.asarray(self._upscale(pixels, scale, self.name))
        return enlarged[:, :, :3].astype(np.float32) / 255.0
# Where a WebUI user gives the weights: said in every message about a missing or broken file.
WEIGHTS_SETTING = "Settings > CodeFormer > CodeFormer weights file"


@dataclass
class HostServices:
    """What the host provides, as plain values and callables."""

    settings: Callable[[], dict[str, Any]]  # each setting's current value, by option key (SETTING_OPTIONS)
    device: Callable[[], str]  # the device the host assigns to face restoration
    model_dirs: Sequence[str] = ()  # where CodeFormer weights are looked for (models/Codeformer)
    detector_model_dirs: Sequence[str] = ()  # RetinaFace / ParseNet weights (models/GFPGAN)
    prepare_memory: Callable[[], None] = lambda: None  # free VRAM before moving a model to the GPU (Forge)
    release_memory: Callable[[], None] = lambda: None  # after a model left the GPU
    upscaler_names: Callable[[], list[str]] = lambda: ["None"]  # the host's upscalers (shared.sd_upscalers)
    # upscale(RGB uint8 image, scale, upscaler name) -> RGB uint8 image: through the host's own upscaler
    upscale: Callable[[np.ndarray, float, str], np.ndarray] | None = None


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
            return {"CodeFormer": f"not applied: {self.error}", VERSION_KEY: __version__}
        info: dict[str, Any] = {
            INFOTEXT_KEYS["fidelity"]: round(float(self.values.get("fidelity", option_specs.default("fidelity"))), 3),
            "CodeFormer restored": f"{self.faces_restored}/{self.faces_found}",
            "CodeFormer detector": self.detector,
            VERSION_KEY: __version__,
        }
        enlarged = [face.upscaled for face in self.faces if face.enlarged]
        if enlarged:
            info[INFOTEXT_KEYS["face_upscaler"]] = f"{self.values.get('face_upscaler')} ({len(enlarged)} faces)"
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
        self._users: dict[int, int] = {}  # restorer id -> calls using it now
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
        """The settings, each checked by its option's rule (OptionError naming the settings that are not valid)."""
        given = self.services.settings()
        values = {option.key: option.default for option in SETTING_OPTIONS}
        problems = []
        for option in SETTING_OPTIONS:
            if option.key not in given:
                continue
            try:
                values[option.key] = option.parse(given[option.key])
            except option_specs.OptionError as error:
                problems += [(key, f"the setting {option.setting_key}: {message}") for key, message in error.problems]
        if problems:
            raise option_specs.OptionError(problems)
        if values.get("device") == "auto":
            values["device"] = None
        return values

    def restorer(self, settings: dict[str, Any] | None = None):
        """The shared FaceRestorer, rebuilt only when the device or weights setting changes."""
        from ...restorer import FaceRestorer
        from ...storage.model_files import WeightsAdvice

        settings = self.settings() if settings is None else settings
        device = self._device(settings)
        weights = settings.get("weights")
        key = (device, weights)
        with self._lock:
            if self._restorer is None or self._restorer_key != key:
                self._restorer = FaceRestorer(
                    weights,
                    detector=option_specs.DEFAULT_DETECTOR,
                    device=device,
                    model_dirs=list(self.services.model_dirs),
                    detector_model_dirs=list(self.services.detector_model_dirs),
                    fast_conv=bool(settings.get("fast_conv", True)),
                    weights_advice=WeightsAdvice(f"the setting '{WEIGHTS_SETTING}'", f"or enter its path in {WEIGHTS_SETTING}"),
                )
                self._restorer_key = key
            return self._restorer

    def _device(self, settings: dict[str, Any]) -> str:
        device = settings.get("device")
        return str(self.services.device() if device is None else device)

    def restore(
        self,
        image: np.ndarray,
        values: dict[str, Any] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Outcome:
        """Restore an RGB(A) uint8 image; never raises: on error the image comes back unchanged.

        ``values``: options given for this call (a control's or an API
        field's value; None or absent: the setting's), checked by the same
        rules as the settings. Calls from several threads run at once:
        detection, alignment and paste-back of one image overlap the others'
        (the restorer lets one network batch run at a time, as each uses
        every core or the GPU).
        """
        try:
            settings = self.settings()
            given = {key: value for key, value in (values or {}).items() if value is not None and key in RESTORE_VALUE_KEYS}
            chosen = {**{key: settings.get(key, option_specs.default(key)) for key in RESTORE_VALUE_KEYS}}
            chosen.update(option_specs.check_values({**chosen, **given}, allowed=RESTORE_VALUE_KEYS))
        except option_specs.OptionError as error:
            return Outcome(image, error=self._report(error), values=dict(values or {}))
        limit = int(settings["max_pixels"])
        height, width = image.shape[:2]
        if height * width > limit:
            message = f"the image is {width} x {height} pixels, over the limit of {limit} (setting 'codeformer_max_pixels')"
            return Outcome(image, error=message, values=chosen)
        try:
            restorer = self._begin_use(settings)
            try:
                result = restorer.restore(
                    image,
                    progress=progress,
                    should_stop=should_stop,
                    face_upscaler=self._face_upscaler(chosen.get("face_upscaler")),
                    **{key: chosen[key] for key in option_specs.RESTORE_KEYS},
                )
            finally:
                self._end_use(restorer, settings)
        except Exception as error:
            message = self._report(error)
            return Outcome(image, error=message, values=chosen)
        restored = result.image
        if chosen["visibility"] < 1.0 and result.changed:
            from ...faces.compositing import blend_regions

            blend_regions(image, restored, chosen["visibility"], result.changed)
        return Outcome(restored, result.faces, result.detector, values=chosen)

    def _face_upscaler(self, name: str | None) -> HostUpscaler | None:
        if not name or name == NO_UPSCALER or self.services.upscale is None:
            return None
        names = self.services.upscaler_names()
        if name not in names:
            raise ValueError(f"the WebUI has no upscaler named {name!r} (its upscalers: {', '.join(names)})")
        return HostUpscaler(name, self.services.upscale)

    def _begin_use(self, settings: dict[str, Any]):
        """The restorer, on its device (VRAM freed first where the host asks for it), counted as in use."""
        with self._lock:
            restorer = self.restorer(settings)
            restorer.fast_conv = bool(settings.get("fast_conv", True))
            target = self._restorer_key[0]
            if self._users.get(id(restorer), 0) == 0 and not target.startswith("cpu"):
                self.services.prepare_memory()  # Forge frees VRAM for the models about to move there
                restorer.to(target)
            self._users[id(restorer)] = self._users.get(id(restorer), 0) + 1
            return restorer

    def _end_use(self, restorer, settings: dict[str, Any]) -> None:
        """When the last user is done: move every model off the GPU if the settings ask for it."""
        with self._lock:
            self._users[id(restorer)] -= 1
            if self._users[id(restorer)]:
                return
            del self._users[id(restorer)]
            if settings.get("unload") and restorer.device.type != "cpu":
                restorer.to("cpu")
                self.services.release_memory()

    def _report(self, error: Exception) -> str:
        """Log an error once per distinct message (not once per image) and return what the user sees."""
        from ...restorer import is_setup_error

        # Its message says what to do; no traceback needed.
        setup = is_setup_error(error) or isinstance(error, option_specs.OptionError)
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


def panel_values(args: Sequence[Any]) -> dict[str, Any]:
    """The panel's positional script args (UI order, possibly shorter from the API) as named values."""
    from .controls import PANEL_KEYS

    names = ("enable", *PANEL_KEYS)
    return {name: value for name, value in zip(names, args, strict=False) if value is not None}  # API args may be fewer


# What a setting's label adds to the option's own label, where the WebUI gives it a meaning of its own.
_SETTING_NOTES = {
    "fidelity": "where the WebUI has its own 'CodeFormer weight' setting, that one is used",
    "device": "auto: the WebUI's choice, --use-cpu honoured",
    "weights": "empty: models/Codeformer, else downloaded",
    "max_pixels": "API, Extras, Restore faces",
}


def setting_label(option: option_specs.Option) -> str:
    """The setting's label: it starts with "CodeFormer", so that searching Settings for it finds every one."""
    if option.scope in (option_specs.RESTORE, option_specs.RESULT):
        label = f"CodeFormer default: {option.display_label}"
    else:
        label = f"CodeFormer: {option.label}"
    note = _SETTING_NOTES.get(option.key)
    return f"{label} ({note})" if note else label


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
        fallback = option_specs.BY_KEY[key].control_default
        fields.append((component, lambda params, key=key, fallback=fallback: params.get(INFOTEXT_KEYS[key], fallback)))
    return fields
