"""Loading CodeFormer weights safely, with errors a user can act on.

Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors,
so a file can hold only tensors and plain containers: a pickle that would
construct an object or call a function is refused before anything in it
runs. Every failure is a ``WeightsError`` that names the file, says what is
wrong with it and what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import WeightsError
from .arch import CodeFormer

StateDict = Mapping[str, torch.Tensor]
WeightsSource = str | os.PathLike | StateDict

OFFICIAL_URL = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"
# What to tell a user whose file is unusable.
GET_OFFICIAL = f"Download the official codeformer.pth from {OFFICIAL_URL} (about 377 MB)."


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
    with torch.device("meta"):
        model = CodeFormer(**_infer_config(state_dict))
    _check_compatible(model, state_dict, label)
    model.load_state_dict({k: v.to(torch.float32).contiguous() for k, v in state_dict.items()}, strict=True, assign=True)
    model.eval().requires_grad_(False)
    return model.to(device=torch.device(device) if device is not None else torch.device("cpu"), dtype=dtype)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file without running any code in it."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise WeightsError(f"CodeFormer weights: {path} {what}. {GET_OFFICIAL} Then pass its path.")
    size = path.stat().st_size
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
        loaded = safe_torch_load(path)
    except pickle.UnpicklingError as error:
        raise _unpickling_error(path, size, error) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError, KeyError) as error:
        raise WeightsError(f"CodeFormer weights: {path} {_describe_unreadable(path, size, error)} {GET_OFFICIAL}") from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(
            f"CodeFormer weights: {path} holds a {type(loaded).__name__}, not a dict of tensors; "
            f"it is not a CodeFormer checkpoint. {GET_OFFICIAL}"
        )
    return dict(loaded)


def safe_torch_load(path: Path):
    """``torch.load(weights_only=True)``, called as ``torch.serialization.load``.

    AUTOMATIC1111 replaces ``torch.load`` with its own checker, which rejects
    (and returns None for) archives written by newer torch versions;
    ``weights_only`` is the guard here, on every host.
    """
    return torch.serialization.load(path, map_location="cpu", weights_only=True)


def _unpickling_error(path: Path, size: int, error: Exception) -> WeightsError:
    imported = _pickled_globals(path)
    if imported or "Unsupported global" in str(error):
        named = f" (it imports {', '.join(imported[:3])})" if imported else ""
        return WeightsError(
            f"CodeFormer weights: refused to load {path}: it contains pickled code or objects{named}, not only tensors. "
            "Unpickling it could run arbitrary programs on this machine, so nothing in it was executed. "
            f"Use the official file ({OFFICIAL_URL}) or a .safetensors copy."
        )
    return WeightsError(f"CodeFormer weights: {path} {_describe_unreadable(path, size, error)} {GET_OFFICIAL}")


# What a checkpoint's pickle may import: the tensor rebuild helpers, storages and dicts.
_CHECKPOINT_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.")


def _pickled_globals(path: Path) -> list[str]:
    """The functions and classes a pickle would import, read with pickletools (which runs nothing)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((name for name in archive.namelist() if name.endswith("data.pkl")), None)
                data = archive.read(member) if member else b""
        else:
            data = path.read_bytes()
        found: list[str] = []
        strings: list[str] = []
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                found.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(argument, str):
                strings.append(argument)
    except (ValueError, KeyError, IndexError, OSError, zipfile.BadZipFile):
        return []
    return [name for name in dict.fromkeys(found) if not name.startswith(_CHECKPOINT_GLOBALS)]


def _describe_unreadable(path: Path, size: int, error: Exception) -> str:
    """Say why a file that torch.load rejected is unusable: truncated, another kind of file, or not torch's."""
    with path.open("rb") as file:
        head = file.read(64)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return (
                f"is truncated or corrupt ({size} bytes; a checkpoint archive whose end is missing). "
                "Delete it and download it again."
            )
        return "is a zip archive but not a PyTorch checkpoint."
    if head.lstrip()[:1] in (b"{", b"["):
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return "is a JSON file, not a checkpoint."
        except (ValueError, UnicodeDecodeError):
            pass
    return f"is not a PyTorch checkpoint ({_short_reason(error)})."


def _short_reason(error: Exception) -> str:
    """torch's message without its advice to load with weights_only=False (unsafe, and wrong here)."""
    text = str(error).split("WeightsUnpickler error:")[-1].strip()
    return text.splitlines()[0] if text else type(error).__name__


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
    config["connect_list"] = sorted({int(key.split(".")[1]) for key in state_dict if key.startswith("fuse_convs_dict.")})
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
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    save_file(
        {k: v.contiguous() for k, v in state_dict.items()}, str(partial), metadata={"format": "pt", "network": "CodeFormer"}
    )
    os.replace(partial, destination)
    return destination
