"""CodeFormer face restoration: the network, its weights, and (elsewhere) the pipeline.

Imports no WebUI module, so it works standalone and in every host.
"""

from .arch import CodeFormer
from .download import CODEFORMER, DownloadError, ModelFile, locate_weights
from .inference import restore_aligned
from .pipeline import FaceRestorer, FaceResult, RestoreOptions, RestoreResult
from .weights import WeightsError, convert_to_safetensors, load_codeformer, read_state_dict

__all__ = [
    "CODEFORMER",
    "CodeFormer",
    "DownloadError",
    "FaceRestorer",
    "FaceResult",
    "ModelFile",
    "RestoreOptions",
    "RestoreResult",
    "WeightsError",
    "convert_to_safetensors",
    "load_codeformer",
    "locate_weights",
    "read_state_dict",
    "restore_aligned",
]
