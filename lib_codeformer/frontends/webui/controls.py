"""Gradio controls for the extension, for gradio 3.41 (AUTOMATIC1111, SD.Next) and 4.x (Forge).

Built from ``options.OPTIONS``; only arguments both gradio generations accept
are used (no ``.style()``, no ``gr.Box``). Every element id starts with
``codeformer_ext_`` so the JavaScript (tooltips, before/after slider) and CSS
find them and nothing else. Importing this module does not import gradio or
torch: the caller passes gradio in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import options as option_specs

ELEMENT_PREFIX = "codeformer_ext_"
# Options shown in the Extras step, in this order (keep_grayscale lives in the settings only).
EXTRAS_KEYS = (
    "fidelity",
    "visibility",
    "detector",
    "confidence",
    "faces",
    "max_faces",
    "min_face_size",
    "blend",
    "mask",
    "color_correction",
)


def component_of(gr, spec: option_specs.OptionSpec) -> tuple[type, dict[str, Any]]:
    """The gradio component class for an option and its range/choice arguments (controls and settings share it).

    A nullable slider starts at 0, which stands for "automatic"; number boxes hold integers.
    """
    if spec.kind == "slider":
        return gr.Slider, {"minimum": 0.0 if spec.nullable else spec.minimum, "maximum": spec.maximum, "step": spec.step}
    if spec.kind == "dropdown":
        return gr.Dropdown, {"choices": list(spec.choices)}
    if spec.kind == "checkbox":
        return gr.Checkbox, {}
    return gr.Number, {"precision": 0, "minimum": spec.minimum, "maximum": spec.maximum}


def control(gr, spec: option_specs.OptionSpec, tab: str) -> Any:
    """One gradio component for an option, showing its default."""
    component, arguments = component_of(gr, spec)
    label = f"{spec.label} (0 = detector default)" if spec.kind == "slider" and spec.nullable else spec.label
    value = bool(spec.default) if spec.kind == "checkbox" else (spec.default if spec.default is not None else 0)
    return component(value=value, label=label, elem_id=f"{ELEMENT_PREFIX}{tab}_{spec.key}", info=spec.help, **arguments)


# The per-generation panel in txt2img/img2img: the main options, in this order (the API's args order too).
PANEL_KEYS = ("fidelity", "faces", "max_faces", "min_face_size", "blend", "mask", "color_correction")


def extras_controls(gr, accordion: Callable[..., Any] | None = None, tab: str = "extras") -> dict[str, Any]:
    """The Extras step's controls: ``enable`` and every option, inside an accordion."""
    return _accordion_of(gr, accordion, tab, _in_rows(EXTRAS_KEYS, (2, 2, 3, 3)))


def panel_controls(gr, accordion: Callable[..., Any] | None, tab: str) -> dict[str, Any]:
    """The txt2img/img2img panel's controls: ``enable`` and the main options."""
    return _accordion_of(gr, accordion, tab, _in_rows(PANEL_KEYS, (2, 2, 3)))


def _in_rows(keys: tuple[str, ...], lengths: tuple[int, ...]) -> list[tuple[str, ...]]:
    """``keys`` in their order, cut into rows of these lengths: the controls' order is the host's args order."""
    if sum(lengths) != len(keys):
        raise ValueError(f"rows of {lengths} do not hold the {len(keys)} options {keys}")
    starts = [sum(lengths[:row]) for row in range(len(lengths))]
    return [keys[start : start + length] for start, length in zip(starts, lengths, strict=True)]


def _accordion_of(gr, accordion, tab: str, rows) -> dict[str, Any]:
    """``enable`` and the options in ``rows``, inside an accordion.

    ``accordion(value, label=..., elem_id=...)`` is the host's InputAccordion
    (a checkbox shown as an accordion) where it has one; else a plain
    accordion holds an enable checkbox.
    """
    elem_id = f"{ELEMENT_PREFIX}{tab}"
    if accordion is not None:
        with accordion(False, label="CodeFormer (extension)", elem_id=elem_id) as enable:
            controls = _option_rows(gr, tab, rows)
    else:
        with gr.Accordion("CodeFormer (extension)", open=False, elem_id=elem_id):
            enable = gr.Checkbox(False, label="Enable", elem_id=f"{elem_id}_enable")
            controls = _option_rows(gr, tab, rows)
    return {"enable": enable, **controls}


def _option_rows(gr, tab: str, rows) -> dict[str, Any]:
    controls: dict[str, Any] = {}
    for row in rows:
        with gr.Row():
            for key in row:
                controls[key] = control(gr, option_specs.BY_KEY[key], tab)
    return controls
