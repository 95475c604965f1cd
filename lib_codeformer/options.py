"""The user-facing options, described once for every front end, and their validation.

The Extras controls, the WebUI settings, the API schema, the command line
and the tooltips (``javascript/codeformer_options.js``, generated from here:
``python -m lib_codeformer.options``) are all built from ``OPTIONS``, so a
label, default, range or explanation is written in one place. Keys equal
``RestoreOptions`` fields (plus ``visibility``, which blends the whole result
with the input as the built-in Extras step does). Importing this module does
not import torch or numpy.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

# Images above this many pixels are refused by the API, the Extras step and the command line
# (decoded as RGBA 8-bit that is 400 MB; the pipeline keeps one copy plus per-face buffers,
# comfortably inside a 24 GB machine; a 16k x 6k panorama still fits).
DEFAULT_MAX_PIXELS = 100_000_000

DETECTORS = ("retinaface_resnet50", "retinaface_mobile0.25", "yunet")
FACE_SELECTIONS = ("all", "largest", "center")
MASKS = ("box", "parsing")


@dataclass(frozen=True)
class OptionSpec:
    key: str
    label: str
    default: Any
    kind: str  # slider, dropdown, checkbox, number
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False  # None is a valid value (meaning: automatic / no limit)

    def schema(self) -> dict[str, Any]:
        """The JSON description served by GET /codeformer/v1/options."""
        entry: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "default": self.default,
            "kind": self.kind,
            "help": self.help,
        }
        if self.minimum is not None:
            entry["minimum"] = self.minimum
        if self.maximum is not None:
            entry["maximum"] = self.maximum
        if self.choices:
            entry["choices"] = list(self.choices)
        if self.nullable:
            entry["nullable"] = True
        return entry


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "fidelity",
        "Fidelity w (0 = best quality, 1 = most faithful)",
        0.5,
        "slider",
        "How much of the input face to keep. 0 rebuilds the face from CodeFormer's codebook (cleanest, may look "
        "less like the person); 1 keeps the most of the input (most faithful, keeps more of its defects).",
        0.0,
        1.0,
        0.01,
    ),
    OptionSpec(
        "visibility",
        "Visibility",
        1.0,
        "slider",
        "Blend the whole restored image with the input: 1 shows only the result.",
        0.0,
        1.0,
        0.01,
    ),
    OptionSpec(
        "detector",
        "Face detector",
        "retinaface_resnet50",
        "dropdown",
        "retinaface_resnet50: what AUTOMATIC1111 uses (104 MB download). retinaface_mobile0.25: smaller, less accurate. "
        "yunet: built in, no download (used automatically when RetinaFace cannot be had).",
        choices=DETECTORS,
    ),
    OptionSpec(
        "confidence",
        "Detection confidence",
        None,
        "slider",
        "Faces the detector is less sure of are ignored. 0: the detector's default (0.97 RetinaFace, 0.8 YuNet). "
        "Lower it to catch small or turned faces, raise it if non-faces get restored.",
        0.05,
        1.0,
        0.01,
        nullable=True,
    ),
    OptionSpec(
        "faces",
        "Which faces",
        "all",
        "dropdown",
        "all: every face found; largest: only the biggest; center: only the one nearest the image centre.",
        choices=FACE_SELECTIONS,
    ),
    OptionSpec(
        "max_faces",
        "Max faces (0 = no limit)",
        None,
        "number",
        "Restore at most this many faces, the largest first (0: no limit).",
        0,
        100,
        1,
        nullable=True,
    ),
    OptionSpec(
        "min_face_size",
        "Min face size (px)",
        0,
        "number",
        "Ignore faces whose box is smaller than this, in pixels (tiny background faces).",
        0,
        4096,
        1,
    ),
    OptionSpec(
        "max_face_size",
        "Max face size (px, 0 = no limit)",
        None,
        "number",
        "Ignore faces whose box is larger than this, in pixels (0: no limit).",
        0,
        16384,
        1,
        nullable=True,
    ),
    OptionSpec(
        "blend",
        "Face blend",
        1.0,
        "slider",
        "Per-face strength: 1 pastes the restored face, 0.5 mixes it half and half with the original face.",
        0.0,
        1.0,
        0.01,
    ),
    OptionSpec(
        "mask",
        "Paste-back mask",
        "box",
        "dropdown",
        "box: a soft-edged square around the face (fast, no download). parsing: only the face's parts, found by "
        "ParseNet (keeps hair and background untouched; 85 MB download).",
        choices=MASKS,
    ),
    OptionSpec(
        "color_correction",
        "Colour correction",
        False,
        "checkbox",
        "Give the restored face the original face's colours (CodeFormer can shift skin tones).",
    ),
    OptionSpec(
        "keep_grayscale",
        "Keep grayscale photos grayscale",
        True,
        "checkbox",
        "A black-and-white image (also one stored as RGB with equal channels) stays black and white.",
    ),
)

BY_KEY = {spec.key: spec for spec in OPTIONS}
# The options FaceRestorer.restore takes (visibility is applied by the front end).
RESTORE_KEYS = tuple(spec.key for spec in OPTIONS if spec.key != "visibility")


def defaults() -> dict[str, Any]:
    return {spec.key: spec.default for spec in OPTIONS}


def default(key: str) -> Any:
    """One option's default (the pipeline, the API model and the command line take theirs from here)."""
    return BY_KEY[key].default


def normalise(values: dict[str, Any]) -> dict[str, Any]:
    """Fill in defaults for missing or None values, and map the UI's "0 = no limit" to None.

    Front ends send what their controls hold: None for a control the API
    caller left out, 0 for "no limit" in number boxes, floats for integers.
    """
    result = defaults()
    for key, value in values.items():
        if key not in BY_KEY or value is None:
            continue
        spec = BY_KEY[key]
        if spec.kind in ("number", "slider"):
            value = int(value) if spec.kind == "number" else float(value)
            if spec.nullable and value == 0:
                value = None
        elif spec.kind == "checkbox":
            value = bool(value)
        result[key] = value
    return result


def restore_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The subset of normalised values that ``FaceRestorer.restore`` takes."""
    return {key: values[key] for key in RESTORE_KEYS}


@dataclass(frozen=True)
class RestoreOptions:
    """Everything ``FaceRestorer.restore`` can be told; the defaults are what most photos want.

    The user-facing options' defaults are those of ``OPTIONS`` (shown in every
    front end); ``feather``, ``aligned`` and ``detector`` are the pipeline's own.
    Build it with ``RestoreOptions.checked(**values)``, which names every
    problem in one ``ValueError``.
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

    @classmethod
    def checked(cls, **values: Any) -> RestoreOptions:
        """Options from keywords, each checked for type and range; one ValueError naming every problem."""
        known = {field.name for field in fields(cls)}
        problems = [f"unknown option {name!r} (options: {', '.join(sorted(known))})" for name in values if name not in known]
        given = {name: value for name, value in values.items() if name in known}
        for name, value in given.items():
            problem = _CHECKS[name](value)
            if problem:
                problems.append(f"{name} {problem} (got {value!r})")
        if not problems:
            options = cls(**{name: bool(value) if _CHECKS[name] is _flag else _plain(value) for name, value in given.items()})
            if options.max_face_size is not None and options.max_face_size < options.min_face_size:
                problems.append(
                    f"max_face_size must be >= min_face_size (got {options.max_face_size} < {options.min_face_size})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return options


def _number(low: float, high: float, *, low_open: bool = False, nullable: bool = False):
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            return "must be a number" + (" or None" if nullable else "")
        if (float(value) <= low if low_open else float(value) < low) or float(value) > high:
            return f"must be in {'(' if low_open else '['}{low:g}, {high:g}]"
        return None

    return check


def _integer(low: int, *, nullable: bool = False):
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return "must be a whole number" + (" or None" if nullable else "")
        return None if int(value) >= low else f"must be >= {low}"

    return check


def _choice(choices: tuple[str, ...], *, nullable: bool = False):
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        return None if isinstance(value, str) and value in choices else f"must be one of {', '.join(choices)}"

    return check


def _flag(value: Any) -> str | None:
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
    plain = isinstance(value, (bool, numbers.Integral)) and int(value) in (0, 1)
    return None if numpy_bool or plain else "must be True or False"


_CHECKS = {
    "fidelity": _number(0.0, 1.0),
    "confidence": _number(0.0, 1.0, low_open=True, nullable=True),
    "min_face_size": _integer(0),
    "max_face_size": _integer(1, nullable=True),
    "faces": _choice(FACE_SELECTIONS),
    "max_faces": _integer(1, nullable=True),
    "blend": _number(0.0, 1.0),
    "mask": _choice(MASKS),
    "feather": _number(0.0, 0.5, low_open=True),
    "color_correction": _flag,
    "keep_grayscale": _flag,
    "aligned": _flag,
    "detector": _choice(DETECTORS, nullable=True),
}


def _plain(value: Any) -> Any:
    """numpy scalars and other number types as the plain Python values the dataclass holds."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


JAVASCRIPT_FILE = "javascript/codeformer_options.js"


def javascript_help() -> str:
    """The tooltips' source, ``javascript/codeformer_options.js``: each option's help text, from ``OPTIONS``."""
    texts = {spec.key: spec.help for spec in OPTIONS}
    return (
        "// Generated from lib_codeformer/options.py by `python -m lib_codeformer.options`: edit the help texts there.\n"
        f"const codeformerExtHelp = {json.dumps(texts, indent=4, ensure_ascii=False)};\n"
    )


if __name__ == "__main__":
    print(javascript_help(), end="")
