"""Loading CodeFormer weights safely, with errors a user can act on.

Checkpoints are read with the project's own restricted unpickler
(``checkpoint.read_checkpoint``, on every torch version; never
``torch.load``) or with safetensors, so a file can hold only tensors and
plain containers: a pickle that would construct an object or call a
function is refused before anything in it runs. Every failure is a
``WeightsError`` that names the file, says what is wrong with it and where
the good file is; the front end adds where to put it.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import WeightsError
from ..storage.atomic import atomic_output
from .arch import CodeFormer
from .checkpoint import CheckpointError, UnsafeCheckpointError, read_checkpoint

StateDict = Mapping[str, torch.Tensor]
WeightsSource = str | os.PathLike | StateDict

OFFICIAL_URL = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"
# What to tell a user whose file is unusable (the front end adds where to put it).
GET_OFFICIAL = f"The official codeformer.pth is {OFFICIAL_URL} (about 377 MB)."


def load_codeformer(
    source: WeightsSource, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> CodeFormer:
    """Build a CodeFormer in eval mode from a checkpoint file or a state dict.

    ``source``: a ``.pth``/``.ckpt`` file (a dict with ``params_ema`` or
    ``params``, or a bare state dict), a ``.safetensors`` file, or a state
    dict in memory. The network's size is read from the weights, so
    checkpoints of other sizes load too. This is the pure network, as the
    paper describes it; ``lib_codeformer.accelerate`` makes it fast.
    """
    label = "the given state dict" if isinstance(source, Mapping) else str(source)
    state_dict = source if isinstance(source, Mapping) else read_state_dict(source)
    state_dict = _unwrap(state_dict, label)
    model = _build(state_dict, label)
    _check_compatible(model, state_dict, label)
    model.load_state_dict({k: v.to(torch.float32).contiguous() for k, v in state_dict.items()}, strict=True, assign=True)
    model.eval().requires_grad_(False)
    return model.to(device=torch.device(device) if device is not None else torch.device("cpu"), dtype=dtype)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file without running any code in it."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise WeightsError(f"CodeFormer weights: {path} {what}. {GET_OFFICIAL}")
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as error:
        raise WeightsError(
            f"CodeFormer weights: {path} cannot be read ({error.strerror or error}). Check the file's permissions."
        ) from None
    if size == 0:
        raise WeightsError(
            f"CodeFormer weights: {path} is empty (0 bytes), probably a failed download. Delete it. {GET_OFFICIAL}"
        )
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path, size)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(
            f"CodeFormer weights: {path} is not a readable .safetensors file (truncated or corrupt: {error}). "
            f"Delete it and convert a good checkpoint again, or {GET_OFFICIAL[0].lower()}{GET_OFFICIAL[1:]}"
        ) from None


def _read_torch(path: Path, size: int) -> dict:
    try:
        loaded = read_checkpoint(path)
    except UnsafeCheckpointError as error:
        named = f" (it imports {', '.join(error.globals[:3])})" if error.globals else ""
        raise WeightsError(
            f"CodeFormer weights: refused to load {path}: it contains pickled code or objects{named}, not only tensors. "
            "Unpickling it could run arbitrary programs on this machine, so nothing in it was executed. "
            f"Use the official file ({OFFICIAL_URL}) or a .safetensors copy."
        ) from None
    except CheckpointError as error:
        raise WeightsError(f"CodeFormer weights: {path} {_describe_unreadable(path, size, error)} {GET_OFFICIAL}") from None
    except OSError as error:
        raise WeightsError(f"CodeFormer weights: {path} cannot be read ({error.strerror or error}).") from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(
            f"CodeFormer weights: {path} holds a {type(loaded).__name__}, not a dict of tensors; "
            f"it is not a CodeFormer checkpoint. {GET_OFFICIAL}"
        )
    return dict(loaded)


def _describe_unreadable(path: Path, size: int, error: CheckpointError) -> str:
    """Say why a file that is no checkpoint is unusable: truncated, another kind of file, or what the reader found."""
    with path.open("rb") as file:
        head = file.read(64)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path) or "truncated" in str(error):
            return (
                f"is truncated or corrupt ({size} bytes; a checkpoint archive whose end is missing). "
                "Delete it and download it again."
            )
        return f"is a zip archive but not a PyTorch checkpoint ({error})."
    if head.lstrip()[:1] in (b"{", b"["):
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return "is a JSON file, not a checkpoint."
        except (ValueError, UnicodeDecodeError):
            pass
    if "truncated" in str(error):
        return f"is truncated or corrupt ({size} bytes: {error}). Delete it and download it again."
    return f"is not a PyTorch checkpoint ({error})."


def read_tensors(path: str | os.PathLike) -> dict:
    """The dict of tensors in any checkpoint file (the detector's and parser's too), read as safely as CodeFormer's.

    Raises WeightsError naming the file for anything else.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        loaded = read_checkpoint(path)
    except (CheckpointError, OSError) as error:
        raise WeightsError(f"{path} is not a usable weights file ({error}). Delete it to download it again.") from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path} does not hold a state dict.")
    return dict(loaded)


def _unwrap(checkpoint: Mapping, label: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``params_ema`` (the released layout), ``params``, or the dict itself."""
    for key in ("params_ema", "params", "state_dict"):
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    not_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"CodeFormer weights: {label} is not a CodeFormer state dict: {len(not_tensors)} entries are not tensors "
            f"(e.g. {', '.join(map(repr, not_tensors[:3]))}). {GET_OFFICIAL}"
        )
    if not checkpoint:
        raise WeightsError(f"CodeFormer weights: {label} holds no tensors. {GET_OFFICIAL}")
    return dict(checkpoint)


# The faces the pipeline aligns are this large; a network made for another size cannot restore them.
FACE_RESOLUTION = 512


def _build(state_dict: StateDict, label: str) -> CodeFormer:
    """The network the tensors describe (on the meta device: no memory), or WeightsError saying why none can be."""
    try:
        with torch.device("meta"):
            model = CodeFormer(**_infer_config(state_dict))
    except (ValueError, TypeError, RuntimeError) as error:
        message = f"CodeFormer weights: {label} does not describe a network that can be built: {error}. {GET_OFFICIAL}"
        raise WeightsError(message) from None
    if model.resolution != FACE_RESOLUTION:
        raise WeightsError(
            f"CodeFormer weights: {label} is a network for {model.resolution} x {model.resolution} faces; "
            f"the pipeline aligns faces at {FACE_RESOLUTION} x {FACE_RESOLUTION}. {GET_OFFICIAL}"
        )
    return model


def _infer_config(state_dict: StateDict) -> dict:
    """Network size from the tensors; the released model's values where a key is absent."""
    config: dict = {}
    try:
        config["latent_size"], config["dim_embd"] = state_dict["position_emb"].shape
        config["codebook_size"], config["embed_dim"] = state_dict["quantize.embedding.weight"].shape
        config["base_channels"] = state_dict["encoder.blocks.0.weight"].shape[0]
    except (KeyError, ValueError):
        return {}
    config["n_layers"] = len({key.split(".")[1] for key in state_dict if key.startswith("ft_layers.")})
    fusions = {key.split(".")[1] for key in state_dict if key.startswith("fuse_convs_dict.")}
    if not all(size.isdigit() for size in fusions):
        raise ValueError(f"fusion layers named {sorted(fusions)} (they are named by resolution: 32, 64, 128, 256)")
    config["connect_list"] = sorted(int(size) for size in fusions)
    return config


def _check_compatible(model: CodeFormer, state_dict: StateDict, label: str) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"CodeFormer weights: {label} is not a CodeFormer checkpoint (another network, or another version): "
            f"{len(missing)} tensors missing ({_first(missing)}), {len(unexpected)} unexpected ({_first(unexpected)}). "
            f"{GET_OFFICIAL}"
        )
    for key, tensor in expected.items():
        found = state_dict[key]
        if found.shape != tensor.shape:
            raise WeightsError(
                f"CodeFormer weights: {label} does not fit the network: {key} has shape {tuple(found.shape)} in the file, "
                f"the network needs {tuple(tensor.shape)}. {GET_OFFICIAL}"
            )
        if not found.is_floating_point():
            raise WeightsError(
                f"CodeFormer weights: {label}: {key} holds {found.dtype}, not floating-point values. {GET_OFFICIAL}"
            )
        if not bool(torch.isfinite(found).all()):
            raise WeightsError(
                f"CodeFormer weights: {label} is corrupt: {key} contains NaN or infinite values. Delete it. {GET_OFFICIAL}"
            )


def _first(keys: list[str], count: int = 4) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:count])
    return shown + (f", ... {len(keys) - count} more" if len(keys) > count else "")


def convert_to_safetensors(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Write the state dict of a checkpoint to ``.safetensors`` after checking it loads."""
    from safetensors.torch import save_file

    destination = Path(destination)
    if destination.suffix.lower() != ".safetensors":
        raise WeightsError(f"convert writes .safetensors files; {destination} has another extension.")
    state_dict = _unwrap(read_state_dict(source), str(source))
    load_codeformer(state_dict)  # refuses anything that is not a usable CodeFormer
    tensors = {key: value.contiguous() for key, value in state_dict.items()}
    with atomic_output(destination) as partial:
        save_file(tensors, str(partial), metadata={"format": "pt", "network": "CodeFormer"})
    return destination
