"""One rule per option: the Python API, the HTTP route, the command line and the WebUI accept and refuse the same
values, in the same words; the generated tooltips and documentation tables are those of the declaration."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from fastapi import HTTPException

from lib_codeformer import options
from lib_codeformer.frontends import cli
from lib_codeformer.frontends.cli.config import option_values
from lib_codeformer.frontends.http_api import parse_request
from lib_codeformer.frontends.webui import runtime as webui_runtime

SHARED = [
    option
    for option in options.OPTIONS
    if {options.PYTHON, options.HTTP, options.CLI} <= option.fronts and option.scope == options.RESTORE
]


def edge_values(option: options.Option) -> list:
    """Each bound, one past it, 0, None, the wrong types, and every choice with one that is not."""
    values: list = [None, "abc", True, [1]]
    if option.type in (int, float):
        step = 1 if option.type is int else 0.01
        for bound in (option.minimum, option.maximum):
            values += [bound, bound - step, bound + step]
        values += [0, 0.0, 2.5, -1, math.inf]
    if option.choices:
        values += [*option.choices, "nope", "ALL", ""]
    return values


def python_verdict(option: options.Option, value) -> str | None:
    try:
        options.RestoreOptions.checked(**{option.key: value})
    except ValueError as error:
        return str(error)
    return None


def http_verdict(option: options.Option, value) -> str | None:
    body = json.dumps({"image": "", option.key: value}).encode()
    try:
        parse_request(body)
    except HTTPException as error:
        assert error.status_code == 422
        return "; ".join(problem["msg"] for problem in error.detail)
    return None


def cli_verdict(option: options.Option, text: str) -> str | None:
    args = cli.build_parser().parse_args(["restore", "in.png", "--output", "out", option.cli_flag, text])
    problems: list[str] = []
    option_values(args, options.RESTORE, problems)
    assert all(problem.startswith(f"{option.cli_flag}: ") for problem in problems)  # the flag, then the library's words
    return "; ".join(problem.removeprefix(f"{option.cli_flag}: ") for problem in problems) or None


class Accepted(Exception):
    """Raised where the runtime would start restoring: the values passed its checks."""


def webui_verdict(option: options.Option, value) -> str | None:
    services = webui_runtime.HostServices(settings=dict, device=lambda: "cpu")
    runtime = webui_runtime.ExtensionRuntime(services)

    def begin_use(settings):
        raise Accepted

    runtime._begin_use = begin_use
    outcome = runtime.restore(np.zeros((8, 8, 3), np.uint8), {option.key: value})
    return None if "Accepted" in (outcome.error or "") else outcome.error


def as_text(value) -> str | None:
    """What a user types for ``value`` on the command line; None where no text spells it (None, booleans, lists)."""
    if value is None or isinstance(value, (bool, list)):
        return None
    return str(value) if not isinstance(value, float) or math.isfinite(value) else "inf"


@pytest.mark.parametrize("option", SHARED, ids=[option.key for option in SHARED])
def test_every_front_end_accepts_and_refuses_the_same_values_in_the_same_words(option):
    for value in edge_values(option):
        if value is math.inf:
            continue  # JSON has no Infinity (the route refuses the body as a whole: 400)
        python = python_verdict(option, value)
        assert http_verdict(option, value) == python, value
        if value is not None:  # None from the WebUI is a control the API caller left out: the setting's value
            assert webui_verdict(option, value) == python, value
        text = as_text(value)
        if text is not None and option.type is not bool:
            assert cli_verdict(option, text) == python, (value, text)
        if python is not None:
            assert python.startswith(f"{option.key} must be"), python
            assert f"(got {value!r})" in python


NUMBERS = [option for option in SHARED if option.type in (int, float)]


@pytest.mark.parametrize("option", NUMBERS, ids=[option.key for option in NUMBERS])
def test_the_bounds_are_accepted_and_one_past_them_refused(option):
    step = 1 if option.type is int else 0.01
    assert python_verdict(option, option.minimum + (step if option.low_open else 0)) is None
    assert python_verdict(option, option.maximum) is None
    assert python_verdict(option, option.maximum + step) is not None
    below = option.minimum - step
    refused = python_verdict(option, below)
    assert refused is None if option.zero_is_none and below == 0 else refused is not None


def test_zero_means_none_wherever_it_stands_for_it():
    checked = options.RestoreOptions.checked(max_faces=0, max_face_size=0.0, confidence=0)
    assert (checked.max_faces, checked.max_face_size, checked.confidence) == (None, None, None)
    assert options.RestoreOptions.checked(min_face_size=0).min_face_size == 0  # a real limit of 0, not None


def test_combinations_are_refused_in_the_same_words():
    with pytest.raises(ValueError) as raised:
        options.RestoreOptions.checked(min_face_size=50, max_face_size=20)
    message = str(raised.value)
    assert message == "max_face_size must be >= min_face_size (got 20 < 50)"
    with pytest.raises(HTTPException) as refused:
        parse_request(json.dumps({"image": "", "min_face_size": 50, "max_face_size": 20}).encode())
    assert [problem["msg"] for problem in refused.value.detail] == [message]
    args = cli.build_parser().parse_args(["restore", "in", "-o", "out", "--min-face-size", "50", "--max-face-size", "20"])
    problems: list[str] = []
    option_values(args, options.RESTORE, problems)
    assert problems == [f"--max-face-size: {message}"]


def test_every_option_key_can_be_a_flag_a_setting_and_an_element_id():
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", option.key) for option in options.OPTIONS)
    flags = [option.cli_flag for option in options.shown_in(options.CLI)]
    assert len(flags) == len(set(flags))


def test_defaults_follow_their_own_rules():
    for option in options.OPTIONS:
        if option.parser is None:
            assert option.parse(option.default) == option.default, option.key


def test_the_generated_tooltips_and_tables_are_up_to_date():
    """``python -m lib_codeformer.options`` writes them; edit the declaration, then run it."""
    stale = [path.name for path, content in options.generated_files().items() if path.read_text(encoding="utf-8") != content]
    assert stale == []


def test_every_option_is_in_the_documentation_tables():
    table = options.markdown_tables()
    assert all(f"| `{option.key}` |" in table for option in options.OPTIONS)
