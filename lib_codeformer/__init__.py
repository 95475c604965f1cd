"""CodeFormer face restoration: the network, its weights, and the face pipeline.

Imports no WebUI module, so it works standalone and in every host. Names are
imported on first use, so that ``import lib_codeformer`` (done by the WebUI
at start-up) costs nothing and does not import torch.

Layout (imports go downwards only; ``tests/test_layering.py`` keeps it so):

- ``errors``, ``options``, ``compat``, ``exports``, ``version``, ``storage/``: shared leaves;
- ``network/``: the pure network, its weights, running it on aligned faces;
- ``acceleration/``: making a loaded network fast on this processor;
- ``faces/``: detection, geometry, parsing, compositing, on arrays;
- ``restorer``: ``FaceRestorer``, wiring the above together;
- clients of the restorer: ``video/`` (steady video), ``batch`` and
  ``distributed/`` (many files, on this machine or on a Ray cluster; only
  ``distributed`` imports Ray, and only when used);
- ``frontends/``: command line, HTTP route, WebUI runtime and controls,
  ComfyUI nodes; ``testing/``: the measurement harness of tests and benchmarks.

See docs/layout.md.
"""

from __future__ import annotations

from .exports import lazy_exports

_EXPORTS = {
    "CodeFormer": "network.arch",
    "CODEFORMER": "storage.model_files",
    "DownloadError": "errors",
    "MissingDependency": "errors",
    "ModelFile": "storage.model_files",
    "locate_weights": "storage.model_files",
    "restore_aligned": "network.inference",
    "accelerate": "acceleration",
    "FaceRestorer": "restorer",
    "FaceResult": "faces.selection",
    "RestoreOptions": "options",
    "RestoreResult": "restorer",
    "WeightsError": "errors",
    "convert_to_safetensors": "network.weights",
    "load_codeformer": "network.weights",
    "read_state_dict": "network.weights",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
