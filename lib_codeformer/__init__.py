"""CodeFormer face restoration: the network, its weights, and the face pipeline.

Imports no WebUI module, so it works standalone and in every host. Names are
imported on first use, so that ``import lib_codeformer`` (done by the WebUI
at start-up) costs nothing and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodeFormer": "arch",
    "CODEFORMER": "download",
    "DownloadError": "download",
    "ModelFile": "download",
    "locate_weights": "download",
    "restore_aligned": "inference",
    "FaceRestorer": "pipeline",
    "FaceResult": "pipeline",
    "RestoreOptions": "pipeline",
    "RestoreResult": "pipeline",
    "WeightsError": "weights",
    "convert_to_safetensors": "weights",
    "load_codeformer": "weights",
    "read_state_dict": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lib_codeformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
