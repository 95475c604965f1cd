"""Every option of the project, declared once: what it is, what values it takes, how each front end shows it.

One ``Option`` per option holds its name, type, default, range or choices,
label, help, command-line flag and the front ends that show it. Everything
else is derived from ``OPTIONS``, so that a rule or a wording is written in
one place and is the same in every front end:

- the validation (``Option.parse``; ``RestoreOptions.checked`` and
  ``check_values`` for several at once, one ``OptionError`` naming each
  problem): the Python API, the HTTP route, the command line and the WebUI
  accept and refuse exactly the same values, with the same words;
- ``RestoreOptions``, the typed options of ``FaceRestorer.restore``;
- the HTTP request model (``frontends.http_api``), the command-line flags
  (``frontends.cli``), the WebUI's Extras controls, panel and settings
  (``frontends.webui``), the ComfyUI node inputs (``frontends.comfyui``);
- the tooltips (``javascript/codeformer_options.js``) and the option tables
  of ``docs/options.md``, written by ``python -m lib_codeformer.options``
  (a test fails when either is out of date).

Importing this module imports neither torch nor numpy (the WebUI and the
command line's ``--help`` import it at start-up).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Images above this many pixels are refused by every front end unless the limit is raised
# (decoded as RGBA 8-bit that is 400 MB; the pipeline keeps one copy plus per-face buffers,
# comfortably inside a 24 GB machine; a 16k x 6k panorama still fits).
DEFAULT_MAX_PIXELS = 100_000_000

DETECTORS = ("auto", "retinaface_resnet50", "retinaface_mobile0.25", "yunet")
DEFAULT_DETECTOR = "auto"
FACE_SELECTIONS = ("all", "largest", "center")
MASKS = ("box", "parsing")
PRECISIONS = ("fp32", "bf16", "fp16")
VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm", "avi", "gif", "webp")
DEVICE_SUGGESTIONS = ("auto", "cpu", "cuda", "mps")
# Frames between two face detections in a video, the faces followed by optical flow in between: every 3rd
# frame gave the lowest landmark error of the settings measured, at a third of the detector's time
# (docs/video.md; ``benchmarks/bench_video.py --smoothing``).
DEFAULT_DETECT_EVERY = 3
# Largest face side (pixels) the face-size limits take: far beyond any photo's face.
MAX_FACE_SIDE = 16384

# The front ends an option can be shown in.
PYTHON = "python"  # keyword of FaceRestorer.restore (restore options) or of FaceRestorer (restorer options)
HTTP = "http"  # a field of POST /codeformer/v1/restore
CLI = "cli"  # a flag of `python -m lib_codeformer restore`
EXTRAS = "extras"  # a control of the WebUI's Extras step
PANEL = "panel"  # a control of the txt2img/img2img CodeFormer panel
SETTINGS = "settings"  # a WebUI setting (Settings > CodeFormer)
COMFYUI = "comfyui"  # an input of the ComfyUI restore nodes
FRONT_ENDS = (PYTHON, HTTP, CLI, EXTRAS, PANEL, SETTINGS, COMFYUI)

# What an option configures.
RESTORE = "restore"  # one restoration (RestoreOptions): may change from call to call
RESULT = "result"  # applied by the front end to the restored image (visibility)
RESTORER = "restorer"  # the FaceRestorer: weights, device, batching, precision, limits
VIDEO = "video"  # video restoration: encoding and steadiness
HOST = "host"  # the WebUI integration itself


class OptionError(ValueError):
    """Values that no front end accepts; the message names every problem, in the library's terms (option keys).

    ``problems`` holds (key, message) pairs; a front end that names options
    differently (the command line's flags) can say each in its own terms.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


@dataclass(frozen=True)
class Option:
    """One option: its rule and how every front end shows it.

    ``none_means``: None is a valid value and means this (``"no limit"``);
    for numbers with ``zero_is_none``, 0 means it too, since number boxes
    and sliders cannot hold None. ``parser``: a custom conversion from text
    for values that are not plain numbers or words (a frame range).
    """

    key: str
    type: type  # float, int, str or bool
    default: Any
    label: str
    help: str
    fronts: frozenset[str]
    scope: str = RESTORE
    minimum: float | None = None
    maximum: float | None = None
    low_open: bool = False  # the minimum itself is excluded
    step: float | None = None
    choices: tuple[str, ...] = ()
    open_choices: bool = False  # the choices are suggestions (a dropdown); other text is accepted too
    none_means: str | None = None
    zero_is_none: bool = False
    flag: str | None = None  # the command-line flag; by default derived from the key
    short_flag: str | None = None
    metavar: str | None = None
    setting: str | None = None  # the WebUI setting's name; by default codeformer_<key>
    parser: Callable[[str], Any] | None = None
    control_value: Any = None  # what a control shows for a None default that it cannot hold (a dropdown's choice)

    # Derived descriptions.

    @property
    def cli_flag(self) -> str:
        """``--fidelity``; booleans that default to True are switched off: ``--no-keep-grayscale``."""
        if self.flag:
            return self.flag
        name = self.key.replace("_", "-")
        return f"--no-{name}" if self.type is bool and self.default is True else f"--{name}"

    @property
    def setting_key(self) -> str:
        return self.setting or f"codeformer_{self.key}"

    @property
    def infotext_key(self) -> str:
        """How the option is named in an image's parameters (infotext): ``CodeFormer max faces``."""
        return f"CodeFormer {self.key.replace('_', ' ')}"

    @property
    def widget(self) -> str:
        """slider, number, dropdown, checkbox or text: the control a UI shows for it."""
        if self.type is bool:
            return "checkbox"
        if self.choices:
            return "dropdown"
        if self.type is float and self.minimum is not None and self.maximum is not None:
            return "slider"
        return "number" if self.type in (int, float) else "text"

    @property
    def display_label(self) -> str:
        """The label a control shows: what 0 means is part of it where 0 stands for None."""
        return f"{self.label} (0 = {self.none_means})" if self.zero_is_none else self.label

    @property
    def control_minimum(self) -> float | None:
        """The lowest value a control offers (0 where 0 stands for None)."""
        return 0 if self.zero_is_none else self.minimum

    @property
    def control_default(self) -> Any:
        """The default as a control holds it (0 for None where 0 stands for it)."""
        if self.default is None:
            return 0 if self.zero_is_none else self.control_value
        return self.default

    def requirement(self, *, as_text: bool = False) -> str:
        """What a valid value is, in words: ``a number in [0, 1]``; ``as_text``: as typed (where None cannot be)."""
        if self.type is bool:
            text = "True or False"
        elif self.choices:
            text = f"{'a name such as' if self.open_choices else 'one of'} {', '.join(self.choices)}"
        elif self.type in (int, float):
            text = "a whole number" if self.type is int else "a number"
            if self.minimum is not None and self.maximum is not None:
                text += f" in {'(' if self.low_open else '['}{_number_text(self.minimum)}, {_number_text(self.maximum)}]"
            elif self.minimum is not None:
                text += f" {'>' if self.low_open else '>='} {_number_text(self.minimum)}"
        else:
            text = "text"
        if self.zero_is_none and as_text:
            text += f", or 0 for {self.none_means}"
        elif self.none_means is not None and not as_text:
            text += f", or {'0 or ' if self.zero_is_none else ''}None for {self.none_means}"
        return text

    # The rule.

    def parse(self, value: Any) -> Any:
        """The value as the library holds it (0 -> None where 0 stands for None); OptionError if it is not valid.

        Takes what any front end hands over: Python values, JSON values, the
        WebUI's control values (a number box's float for a whole number).
        """
        problem = self._problem(value)
        if problem:
            raise OptionError([(self.key, f"{self.key} must be {self.requirement()} (got {value!r})")])
        return self._converted(value)

    def parse_text(self, text: str) -> Any:
        """A value typed on the command line: converted from text, then ``parse``d (the same rule, the same words)."""
        if self.parser is not None:
            try:
                return self.parser(text)
            except ValueError as error:
                raise OptionError([(self.key, f"{self.key} {error}")]) from None
        return self.parse(_from_text(text, self.type))

    def _problem(self, value: Any) -> bool:
        if value is None:
            return self.none_means is None
        if self.type is bool:
            numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
            return not (numpy_bool or (isinstance(value, (bool, numbers.Integral)) and int(value) in (0, 1)))
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                return True
            number = float(value)
            if self.type is int and not number.is_integer():
                return True
            if self.zero_is_none and number == 0:
                return False
            below = self.minimum is not None and (number <= self.minimum if self.low_open else number < self.minimum)
            return below or (self.maximum is not None and number > self.maximum)
        if not isinstance(value, str):
            return True
        return bool(self.choices) and not self.open_choices and value not in self.choices

    def _converted(self, value: Any) -> Any:
        if value is None:
            return None
        if self.type is bool:
            return bool(value)
        if self.type in (int, float):
            number = int(value) if self.type is int else float(value)
            return None if self.zero_is_none and number == 0 else number
        return None if self.none_means is not None and not value.strip() else value  # empty text: not given


def _number_text(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{int(value):_}".replace("_", " ")


def _from_text(text: str, kind: type) -> Any:
    """Command-line text as the value it spells ("2" an int, "2.0" a float, as Python and JSON read them);
    text that spells no number stays text (and is refused)."""
    if kind in (int, float):
        for number_type in (int, float):
            try:
                return number_type(text)
            except ValueError:
                continue
    return text


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """``START:END`` (END excluded, either may be left out) as numbers; ValueError saying what is wrong."""
    start_text, colon, end_text = text.partition(":")
    if not colon:
        raise ValueError(f"takes START:END (e.g. 0:100, 250:, :50); got {text!r}")
    try:
        start = int(start_text) if start_text.strip() else 0
        end = int(end_text) if end_text.strip() else None
    except ValueError:
        raise ValueError(f"takes whole frame numbers START:END; got {text!r}") from None
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"needs 0 <= START < END; got {text!r}")
    return start, end


_EVERYWHERE = frozenset({PYTHON, HTTP, CLI, EXTRAS, PANEL, SETTINGS, COMFYUI})
_ALL_BUT_PANEL = _EVERYWHERE - {PANEL}

OPTIONS: tuple[Option, ...] = (
    Option(
        "fidelity",
        float,
        0.5,
        "Fidelity w (0 = best quality, 1 = most faithful)",
        "How much of the input face to keep. 0 rebuilds the face from CodeFormer's codebook (cleanest, may look "
        "less like the person); 1 keeps the most of the input (most faithful, keeps more of its defects).",
        _EVERYWHERE,
        minimum=0.0,
        maximum=1.0,
        step=0.01,
        short_flag="-w",
    ),
    Option(
        "visibility",
        float,
        1.0,
        "Visibility",
        "Blend the whole restored image with the input: 1 shows only the result.",
        frozenset({HTTP, EXTRAS, SETTINGS}),
        scope=RESULT,
        minimum=0.0,
        maximum=1.0,
        step=0.01,
    ),
    Option(
        "detector",
        str,
        None,
        "Face detector",
        "auto: RetinaFace-ResNet50 where it can be had, else YuNet (the image's info says which ran). "
        "retinaface_resnet50: what AUTOMATIC1111 uses (104 MB download). retinaface_mobile0.25: smaller, less accurate. "
        "yunet: built in, no download.",
        _ALL_BUT_PANEL,
        choices=DETECTORS,
        none_means=f"the restorer's own ({DEFAULT_DETECTOR} unless it was made with another)",
        control_value=DEFAULT_DETECTOR,
    ),
    Option(
        "confidence",
        float,
        None,
        "Detection confidence",
        "Faces the detector is less sure of are ignored. 0: the detector's default (0.97 RetinaFace, 0.8 YuNet). "
        "Lower it to catch small or turned faces, raise it if non-faces get restored.",
        _ALL_BUT_PANEL,
        minimum=0.0,
        maximum=1.0,
        low_open=True,
        step=0.01,
        none_means="the detector's default",
        zero_is_none=True,
    ),
    Option(
        "faces",
        str,
        "all",
        "Which faces",
        "all: every face found; largest: only the biggest; center: only the one nearest the image centre.",
        _EVERYWHERE,
        choices=FACE_SELECTIONS,
    ),
    Option(
        "max_faces",
        int,
        None,
        "Max faces",
        "Restore at most this many faces, the largest first (0: no limit).",
        _EVERYWHERE,
        minimum=1,
        maximum=1000,
        step=1,
        none_means="no limit",
        zero_is_none=True,
        metavar="N",
    ),
    Option(
        "min_face_size",
        int,
        0,
        "Min face size (px)",
        "Ignore faces whose box is smaller than this, in pixels (tiny background faces).",
        _EVERYWHERE,
        minimum=0,
        maximum=MAX_FACE_SIDE,
        step=1,
        metavar="PX",
    ),
    Option(
        "max_face_size",
        int,
        None,
        "Max face size (px)",
        "Ignore faces whose box is larger than this, in pixels (0: no limit).",
        _ALL_BUT_PANEL - {EXTRAS},
        minimum=1,
        maximum=MAX_FACE_SIDE,
        step=1,
        none_means="no limit",
        zero_is_none=True,
        metavar="PX",
    ),
    Option(
        "blend",
        float,
        1.0,
        "Face blend",
        "Per-face strength: 1 pastes the restored face, 0.5 mixes it half and half with the original face.",
        _EVERYWHERE,
        minimum=0.0,
        maximum=1.0,
        step=0.01,
    ),
    Option(
        "mask",
        str,
        "box",
        "Paste-back mask",
        "box: a soft-edged square around the face (fast, no download). parsing: only the face's parts, found by "
        "ParseNet (keeps hair and background untouched; 85 MB download).",
        _EVERYWHERE,
        choices=MASKS,
    ),
    Option(
        "color_correction",
        bool,
        False,
        "Colour correction",
        "Give the restored face the original face's colours (CodeFormer can shift skin tones).",
        _EVERYWHERE,
    ),
    Option(
        "keep_grayscale",
        bool,
        True,
        "Keep grayscale photos grayscale",
        "A black-and-white image (also one stored as RGB with equal channels) stays black and white.",
        _ALL_BUT_PANEL - {EXTRAS},
    ),
    Option(
        "feather",
        float,
        0.1,
        "Box mask edge",
        "Width of the box mask's soft edge, as a fraction of the face.",
        frozenset({PYTHON}),
        minimum=0.0,
        maximum=0.5,
        low_open=True,
    ),
    Option(
        "aligned",
        bool,
        False,
        "Aligned faces",
        "The inputs are already aligned 512 x 512 faces (as CodeFormer's own test sets): no detection, no paste-back.",
        frozenset({PYTHON, CLI}),
    ),
    # The restorer: loaded models and how they run.
    Option(
        "weights",
        str,
        None,
        "CodeFormer weights file",
        "A .pth or .safetensors file of CodeFormer's weights, read without running any code in it. Empty: "
        "codeformer.pth from the host's model folder, else downloaded (and verified) once.",
        frozenset({PYTHON, CLI, SETTINGS}),
        scope=RESTORER,
        none_means="the official file, found or downloaded",
        metavar="PATH",
        setting="codeformer_weights_path",
    ),
    Option(
        "device",
        str,
        None,
        "Device",
        "Where the models run: cpu, cuda, cuda:1, mps. auto (or empty): the host's choice, else the best available.",
        frozenset({PYTHON, CLI, SETTINGS}),
        scope=RESTORER,
        choices=DEVICE_SUGGESTIONS,
        open_choices=True,
        none_means="the best available",
    ),
    Option(
        "batch_size",
        int,
        None,
        "Faces per network call",
        "How many faces the network restores at once: more is faster on a GPU and needs more memory.",
        frozenset({PYTHON, CLI}),
        scope=RESTORER,
        minimum=1,
        maximum=256,
        none_means="the device's choice (by free memory on a GPU)",
        metavar="N",
    ),
    Option(
        "precision",
        str,
        "fp32",
        "Network precision",
        "fp32 is exact; bf16 and fp16 are faster on GPUs and change a few of the network's choices.",
        frozenset({PYTHON, CLI}),
        scope=RESTORER,
        choices=PRECISIONS,
    ),
    Option(
        "fast_conv",
        bool,
        True,
        "Fast CPU convolutions",
        "The compiled Winograd kernel for the CPU (built with the system's C compiler on first use; without a "
        "compiler PyTorch's convolutions are used, with the same results).",
        frozenset({PYTHON, CLI, SETTINGS}),
        scope=RESTORER,
    ),
    Option(
        "max_pixels",
        int,
        DEFAULT_MAX_PIXELS,
        "Largest image (pixels)",
        "Larger images are refused before they are decoded (they would need more memory than most machines have).",
        frozenset({CLI, SETTINGS}),
        scope=RESTORER,
        minimum=1,
        maximum=2**40,
    ),
    Option(
        "face_upscaler",
        str,
        None,
        "Upscaler for large faces",
        "Faces larger on the image than CodeFormer's 512 px are enlarged by this upscaler to their size there before "
        "they are pasted back, so they keep the detail of the skin and hair around them; smaller faces cost nothing. "
        "Command line: lanczos or a super-resolution model file (ESRGAN, Real-ESRGAN, SwinIR, DAT...); WebUI: one of "
        "the WebUI's upscalers.",
        frozenset({CLI, HTTP, EXTRAS, SETTINGS}),
        scope=RESTORER,
        choices=("None", "Lanczos"),
        open_choices=True,
        none_means="no enlarging (faces are stretched from the 512 px crop)",
        control_value="None",
        metavar="PATH",
    ),
    Option(
        "upscale",
        float,
        1.0,
        "Enlarge the whole image",
        "Enlarge each image this many times (with the upscaler below), then restore its faces at that size, as "
        "CodeFormer's own command line does with -s; a result over the pixel limit is written at its own size, "
        "with a note.",
        frozenset({CLI}),
        scope=RESTORER,
        minimum=1.0,
        maximum=8.0,
        metavar="S",
    ),
    Option(
        "upscaler",
        str,
        None,
        "Upscaler for the whole image",
        "lanczos or a super-resolution model file, used by the whole-image enlarging (tile by tile, so a large "
        "photo fits in memory).",
        frozenset({CLI}),
        scope=RESTORER,
        none_means="lanczos",
        metavar="PATH",
    ),
    Option(
        "unload",
        bool,
        False,
        "Move the models to the CPU after use",
        "Frees the GPU's memory for generation after each restoration; the next one is slower.",
        frozenset({SETTINGS}),
        scope=RESTORER,
    ),
    # Videos.
    Option(
        "detect_every",
        int,
        DEFAULT_DETECT_EVERY,
        "Detect faces every N frames",
        "Faces are detected on every N-th frame and followed by optical flow in between.",
        frozenset({PYTHON, CLI, COMFYUI}),
        scope=VIDEO,
        minimum=1,
        maximum=1000,
        step=1,
        metavar="N",
    ),
    Option(
        "steady",
        bool,
        True,
        "Steady faces",
        "Follow each face over the frames and hold its alignment and look steady (off: each frame alone, as "
        "frame-by-frame restoration does; faces flicker more).",
        frozenset({PYTHON, CLI, COMFYUI}),
        scope=VIDEO,
    ),
    Option(
        "video_crf",
        int,
        None,
        "Video quality (CRF)",
        "Constant rate factor: lower is better and bigger.",
        frozenset({PYTHON, CLI}),
        scope=VIDEO,
        minimum=0,
        maximum=63,
        none_means="the codec's default (18 for H.264, visually lossless)",
        metavar="Q",
    ),
    Option(
        "video_codec",
        str,
        None,
        "Video codec",
        "An FFmpeg encoder name (libx264, libx265, libvpx-vp9, ffv1, ...).",
        frozenset({PYTHON, CLI}),
        scope=VIDEO,
        none_means="H.264 where the container takes it, else a (visually) lossless one",
        metavar="NAME",
    ),
    Option(
        "video_format",
        str,
        None,
        "Video container",
        "The container of the results.",
        frozenset({PYTHON, CLI}),
        scope=VIDEO,
        choices=VIDEO_FORMATS,
        none_means="the input's",
    ),
    Option(
        "frames",
        str,
        None,
        "Frame range",
        "Only frames START to END-1, counted from 0 (START:END; either may be left out: 250:, :50).",
        frozenset({PYTHON, CLI}),
        scope=VIDEO,
        none_means="every frame",
        metavar="START:END",
        parser=parse_frame_range,
    ),
    Option(
        "audio",
        bool,
        True,
        "Keep the sound",
        "Every audio stream is copied (re-encoded only where the container cannot hold its codec).",
        frozenset({PYTHON, CLI}),
        scope=VIDEO,
    ),
    # The WebUI integration.
    Option(
        "takeover",
        bool,
        True,
        'Use this extension for the built-in "CodeFormer"',
        'Restore faces, Extras, the API and other extensions then use it; off: it is listed as "CodeFormer (extension)" '
        "and the built-in is untouched.",
        frozenset({SETTINGS}),
        scope=HOST,
    ),
)

BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}
# The options FaceRestorer.restore takes.
RESTORE_KEYS = tuple(option.key for option in OPTIONS if option.scope == RESTORE)


def default(key: str) -> Any:
    """One option's default (every front end takes its default from here)."""
    return BY_KEY[key].default


def defaults(keys: Iterable[str] | None = None) -> dict[str, Any]:
    return {key: BY_KEY[key].default for key in (keys if keys is not None else BY_KEY)}


def shown_in(front: str, scope: str | None = None) -> tuple[Option, ...]:
    """The options ``front`` shows (of ``scope`` only, if given), in declaration order."""
    return tuple(option for option in OPTIONS if front in option.fronts and (scope is None or option.scope == scope))


def of_scope(scope: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if option.scope == scope)


def check_values(values: Mapping[str, Any], *, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """Each value ``parse``d by its option's rule, the combinations checked; one OptionError naming every problem.

    ``allowed``: the keys the caller takes (unknown keys are a problem);
    every declared key by default.
    """
    known = set(allowed) if allowed is not None else set(BY_KEY)
    problems: list[tuple[str, str]] = []
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            problems.append((key, f"unknown option {key!r} (options: {', '.join(sorted(known))})"))
            continue
        try:
            parsed[key] = BY_KEY[key].parse(value)
        except OptionError as error:
            problems += error.problems
    if not problems:
        problems = combination_problems(parsed)
    if problems:
        raise OptionError(problems)
    return parsed


def combination_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules between options (each value already valid alone)."""
    low = values.get("min_face_size", default("min_face_size"))
    high = values.get("max_face_size", default("max_face_size"))
    if high is not None and low is not None and high < low:
        return [("max_face_size", f"max_face_size must be >= min_face_size (got {high} < {low})")]
    return []


def _checked(cls: type, **values: Any) -> Any:
    """Options from keywords, each checked for type and range; one OptionError (a ValueError) naming every problem."""
    return cls(**check_values(values, allowed=RESTORE_KEYS))


RestoreOptions = dataclasses.make_dataclass(
    "RestoreOptions",
    [(option.key, option.type | None if option.none_means else option.type, option.default) for option in of_scope(RESTORE)],
    namespace={
        "__doc__": "Everything ``FaceRestorer.restore`` can be told; the defaults are what most photos want.\n\n"
        "Its fields and their rules are the restore options of ``OPTIONS`` (see docs/options.md). Build it\n"
        "with ``RestoreOptions.checked(**values)``, which names every problem in one ``OptionError``.",
        "checked": classmethod(_checked),
        "__module__": __name__,
    },
    frozen=True,
)


# Generated files: the tooltips and the documentation's option tables.

ROOT = Path(__file__).resolve().parents[1]
JAVASCRIPT_FILE = "javascript/codeformer_options.js"
OPTIONS_DOC = "docs/options.md"
_TABLE_BEGIN = "<!-- options table: generated by `python -m lib_codeformer.options` -->"
_TABLE_END = "<!-- end of the generated options table -->"


def javascript_help() -> str:
    """The tooltips' source, ``javascript/codeformer_options.js``: each control's help text, from ``OPTIONS``."""
    texts = {option.key: option.help for option in OPTIONS if option.fronts & {EXTRAS, PANEL}}
    return (
        "// Generated from lib_codeformer/options.py by `python -m lib_codeformer.options`: edit the help texts there.\n"
        f"const codeformerExtHelp = {json.dumps(texts, indent=4, ensure_ascii=False)};\n"
    )


_FRONT_COLUMNS = ((PYTHON, "Python"), (HTTP, "HTTP"), (CLI, "command line"), (EXTRAS, "Extras"), (PANEL, "panel"))
_FRONT_COLUMNS += ((SETTINGS, "WebUI setting"), (COMFYUI, "ComfyUI"))
_SCOPE_HEADINGS = {
    RESTORE: "Restoring faces",
    RESULT: "The result",
    RESTORER: "Models and devices",
    VIDEO: "Videos",
    HOST: "The WebUI extension",
}


def markdown_tables() -> str:
    """The option tables of ``docs/options.md``: one per scope, every option with its rule and where it is shown."""
    lines = []
    for scope, heading in _SCOPE_HEADINGS.items():
        lines += [f"### {heading}", "", "| option | values | default | where | what it does |", "|---|---|---|---|---|"]
        for option in OPTIONS:
            if option.scope != scope:
                continue
            where = []
            for front, name in _FRONT_COLUMNS:
                if front not in option.fronts:
                    continue
                if front == CLI:
                    flags = f"{option.short_flag}, {option.cli_flag}" if option.short_flag else option.cli_flag
                    where.append(f"`{flags}`")
                elif front == SETTINGS:
                    where.append(f"setting `{option.setting_key}`")
                else:
                    where.append(name)
            shown = option.default if option.default is not None else "None"
            text = option.help.replace("|", "\\|")
            lines.append(f"| `{option.key}` | {option.requirement()} | `{shown}` | {', '.join(where)} | {text} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def document_with_tables(document: str) -> str:
    """``document`` (docs/options.md) with its generated section replaced by the current tables."""
    begin, end = document.index(_TABLE_BEGIN) + len(_TABLE_BEGIN), document.index(_TABLE_END)
    return f"{document[:begin]}\n\n{markdown_tables()}\n{document[end:]}"


def generated_files() -> dict[Path, str]:
    """Every file generated from ``OPTIONS``, with the content it must have."""
    doc = ROOT / OPTIONS_DOC
    return {ROOT / JAVASCRIPT_FILE: javascript_help(), doc: document_with_tables(doc.read_text(encoding="utf-8"))}


def main(argv: list[str]) -> int:
    """Write the generated files (``--check``: only say which are out of date, exit 1 if any)."""
    stale = []
    for path, content in generated_files().items():
        if path.read_text(encoding="utf-8") != content:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(content, encoding="utf-8")
    for path in stale:
        print(f"{'out of date' if '--check' in argv else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
