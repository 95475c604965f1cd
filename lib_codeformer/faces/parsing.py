"""The face-parsing model (facexlib's ParseNet): which pixels of an aligned face belong to the face.

Used for the "parsing" paste-back mask: the face's parts only, so hair and
background keep their exact pixels. Its weights are found in the WebUI's
``models/GFPGAN`` folder or downloaded verified, and loaded safely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..acceleration import cpu_layout
from ..acceleration.layers import FastConv3x3
from ..errors import MissingDependency, WeightsError
from ..storage.model_files import ModelFile
from .detection import read_weights
from .parsenet_fast import accelerate_parsenet

PARSENET = ModelFile(
    filename="parsing_parsenet.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
    sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
)


class FaceParser:
    """facexlib's ParseNet (in its fast form, ``parsenet_fast``): per-pixel face-part labels of aligned 512 x 512 faces."""

    # Labels that belong to the face for paste-back: all but background (0), neck (14),
    # cloth (16), hair (17) and hat (18).
    NOT_FACE = (0, 14, 16, 17, 18)

    def __init__(self, weights: Path, device: torch.device, *, use_winograd: bool = True) -> None:
        try:
            from facexlib.parsing.parsenet import ParseNet
        except ImportError:
            raise MissingDependency(
                "the parsing mask needs the 'facexlib' package, which is not installed: "
                "pip install facexlib (or use the box mask)"
            ) from None

        model = ParseNet(in_size=512, out_size=512, parsing_ch=19)
        try:
            model.load_state_dict(read_weights(weights), strict=True)
        except RuntimeError as error:
            raise WeightsError(f"{weights} is not ParseNet's weights ({str(error).splitlines()[0]}).") from None
        self.model = accelerate_parsenet(model.eval().requires_grad_(False).to(device), use_winograd=use_winograd)
        self.device = device

    def to(self, device: torch.device) -> None:
        cpu_layout(self.model.to(device))
        self.device = torch.device(device)

    def use_winograd(self, enabled: bool) -> None:
        """Whether the CPU float32 3x3 convolutions run on the compiled Winograd kernel (the restorer's ``fast_conv``)."""
        for module in self.model.modules():
            if isinstance(module, FastConv3x3):
                module.use_winograd = bool(enabled)

    def face_masks(self, faces: torch.Tensor) -> np.ndarray:
        """(B, 3, 512, 512) RGB in [-1, 1] to (B, 512, 512) float32 masks, 1 on the face."""
        with torch.inference_mode():
            labels = self.model(faces.to(self.device)).argmax(dim=1).cpu().numpy()
        return (~np.isin(labels, self.NOT_FACE)).astype(np.float32)
