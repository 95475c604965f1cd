"""Packages whose public names are imported on first use (PEP 562).

``import lib_codeformer`` is done by the WebUI at start-up and by the command
line's parser: it must not import torch (seconds) or PyAV. A package lists
its public names and the submodule each lives in; ``lazy_exports`` gives it
the module-level ``__getattr__`` and ``__dir__`` that import them when first
asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each name to its submodule (relative)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value  # later lookups find it directly
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
