"""Gradio controls for the extension, for gradio 3.41 (AUTOMATIC1111, SD.Next) and 4.x (Forge).

Built from ``options.OPTIONS`` (the options shown in the Extras step and the
panel); only arguments both gradio generations accept are used (no
``.style()``, no ``gr.Box``). Every element id starts with
``codeformer_ext_`` so the JavaScript (tooltips, before/after slider) and CSS
find them and nothing else. Importing this module does not import gradio or
torch: the caller passes gradio in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import options as option_specs

ELEMENT_PREFIX = "codeformer_ext_"
# The Extras step's and the txt2img/img2img panel's options, in declaration order (the host's args order too).
EXTRAS_KEYS = tuple(option.key for option in option_specs.shown_in(option_specs.EXTRAS))
PANEL_KEYS = tuple(option.key for option in option_specs.shown_in(option_specs.PANEL))


def component_of(gr, option: option_specs.Option) -> tuple[type, dict[str, Any]]:
    """The gradio component class for an option and its range/choice arguments (controls and settings share it).

    A slider or number box whose 0 stands for None starts at 0; number boxes of whole numbers hold integers.
    """
    widget = option.widget
    if widget == "slider":
        return gr.Slider, {"minimum": option.control_minimum, "maximum": option.maximum, "step": option.step}
    if widget == "dropdown":
        # The choices only: AUTOMATIC1111 passes these arguments to gradio 3.41's Dropdown.update on every settings
        # load too, which takes no allow_custom_value (the whole settings page failed to load with it).
        return gr.Dropdown, {"choices": list(option.choices)}
    if widget == "checkbox":
        return gr.Checkbox, {}
    if widget == "text":
        return gr.Textbox, {}
    precision = {"precision": 0} if option.type is int else {}
    return gr.Number, {**precision, "minimum": option.control_minimum, "maximum": option.maximum}


def control(gr, option: option_specs.Option, tab: str, choices: list[str] | None = None) -> Any:
    """One gradio component for an option, showing its default; its help is its tooltip (javascript/).
    ``choices``: the host's own, for an option whose choices are the host's (its upscalers)."""
    component, arguments = component_of(gr, option)
    if choices:
        arguments = {**arguments, "choices": list(choices)}
    value = option.control_default
    return component(value=value, label=option.display_label, elem_id=f"{ELEMENT_PREFIX}{tab}_{option.key}", **arguments)


def extras_controls(
    gr, accordion: Callable[..., Any] | None = None, tab: str = "extras", upscalers: list[str] | None = None
) -> dict[str, Any]:
    """The Extras step's controls: ``enable`` and every option, inside an accordion. ``upscalers``: the host's,
    offered for large faces."""
    choices = {"face_upscaler": upscalers} if upscalers else {}
    return _accordion_of(gr, accordion, tab, _in_rows(EXTRAS_KEYS, (2, 2, 3, 3, 1)), choices)


def panel_controls(gr, accordion: Callable[..., Any] | None, tab: str) -> dict[str, Any]:
    """The txt2img/img2img panel's controls: ``enable`` and the main options."""
    return _accordion_of(gr, accordion, tab, _in_rows(PANEL_KEYS, (2, 2, 3)))


def _in_rows(keys: tuple[str, ...], lengths: tuple[int, ...]) -> list[tuple[str, ...]]:
    """``keys`` in their order, cut into rows of these lengths: the controls' order is the host's args order."""
    if sum(lengths) != len(keys):
        raise ValueError(f"rows of {lengths} do not hold the {len(keys)} options {keys}")
    starts = [sum(lengths[:row]) for row in range(len(lengths))]
    return [keys[start : start + length] for start, length in zip(starts, lengths, strict=True)]


def _accordion_of(gr, accordion, tab: str, rows, choices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """``enable`` and the options in ``rows``, inside an accordion.

    ``accordion(value, label=..., elem_id=...)`` is the host's InputAccordion
    (a checkbox shown as an accordion) where it has one; else a plain
    accordion holds an enable checkbox.
    """
    elem_id = f"{ELEMENT_PREFIX}{tab}"
    if accordion is not None:
        with accordion(False, label="CodeFormer (extension)", elem_id=elem_id) as enable:
            controls = _option_rows(gr, tab, rows, choices or {})
    else:
        with gr.Accordion("CodeFormer (extension)", open=False, elem_id=elem_id):
            enable = gr.Checkbox(False, label="Enable", elem_id=f"{elem_id}_enable")
            controls = _option_rows(gr, tab, rows, choices or {})
    return {"enable": enable, **controls}


def _option_rows(gr, tab: str, rows, choices: dict[str, list[str]]) -> dict[str, Any]:
    controls: dict[str, Any] = {}
    for row in rows:
        with gr.Row():
            for key in row:
                controls[key] = control(gr, option_specs.BY_KEY[key], tab, choices.get(key))
    return controls
