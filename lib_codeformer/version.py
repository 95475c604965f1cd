"""The version the user runs, written in one place: ``pyproject.toml``.

A clone (the WebUI extension, the ComfyUI node pack) reads it from the
``pyproject.toml`` beside the package; an installed wheel from its metadata.
Bug reports quote it: ``codeformer --version``, the Extras info and the
infotext (``CodeFormer version``), the ComfyUI nodes' descriptions.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "sd-webui-codeformer"
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _read_version() -> str:
    try:
        text = _PYPROJECT.read_text(encoding="utf-8")
    except OSError:
        text = ""
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if project and re.search(rf'^name\s*=\s*"{DISTRIBUTION}"', project.group(1), re.M):
        found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
        if found:
            return found.group(1)
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


__version__ = _read_version()
