"""The face-parsing model (facexlib's ParseNet): which pixels of an aligned face belong to the face.

Used for the "parsing" paste-back mask: the face's parts only, so hair and
background keep their exact pixels. Its weights are found in the WebUI's
``models/GFPGAN`` folder or downloaded verified, and loaded safely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDependency, WeightsError
from ..storage.model_files import ModelFile
from .detection import read_weights

PARSENET = ModelFile(
    filename="parsing_parsenet.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
    sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
)


class FaceParser:
    """facexlib's ParseNet: per-pixel face-part labels of an aligned 512 x 512 face."""

    # Labels that belong to the face for paste-back: all but background (0), neck (14),
    # cloth (16), hair (17) and hat (18).
    NOT_FACE = (0, 14, 16, 17, 18)

    def __init__(self, weights: Path, device: torch.device) -> None:
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
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = device

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        self.device = torch.device(device)

    def face_masks(self, faces: torch.Tensor) -> np.ndarray:
        """(B, 3, 512, 512) RGB in [-1, 1] to (B, 512, 512) float32 masks, 1 on the face."""
        with torch.inference_mode():
            labels = self.model(faces.to(self.device))[0].argmax(dim=1).cpu().numpy()
        return (~np.isin(labels, self.NOT_FACE)).astype(np.float32)
