"""The user-facing options, described once for every front end.

The Extras controls, the WebUI settings, the API schema and its validation
are all built from ``OPTIONS``, so a default, range or explanation is written
in one place. Keys equal ``RestoreOptions`` fields (plus ``visibility``, which
blends the whole result with the input as the built-in Extras step does).
Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        "Faces the detector is less sure of are ignored. Empty: the detector's default (0.97 RetinaFace, 0.8 YuNet). "
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
        "Restore at most this many faces, the largest first.",
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
        "Ignore faces whose box is larger than this, in pixels.",
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
