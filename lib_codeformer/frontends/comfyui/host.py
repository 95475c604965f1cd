"""The ComfyUI host: the one module that imports ComfyUI's own modules (``folder_paths``, ``comfy.*``).

Everything the nodes need from ComfyUI goes through here: the model folders
(``models/facerestore_models`` where facerestore_cf and ReActor users keep
``codeformer.pth``, ``models/codeformer``, ``models/facedetection`` for the
detector and parser weights, and whatever ``extra_model_paths.yaml`` adds),
the device and memory (``comfy.model_management``: ``--cpu`` respected,
other models offloaded first, caches emptied after), Cancel, and the
progress bar. Written for ComfyUI 0.3.64 (October 2025) to 0.33 (2026);
where a call differs between them it is said here. Without ComfyUI (tests
without the fake, ``pip install``) each answers as a plain process would.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("codeformer")

# Folder names ComfyUI knows model folders by, and the folder under models/ each defaults to.
CODEFORMER_FOLDERS = ("facerestore_models", "codeformer")
DETECTION_FOLDER = "facedetection"
WEIGHT_SUFFIXES = {".pth", ".safetensors"}


def _folder_paths() -> Any | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def _model_management() -> Any | None:
    try:
        from comfy import model_management
    except ImportError:
        return None
    return model_management


def register_model_folders() -> None:
    """Our folder names, each with its default folder under models/, never replacing what is already registered
    (``extra_model_paths.yaml`` entries and other packs' folders are loaded before custom nodes)."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return
    for name in (*CODEFORMER_FOLDERS, DETECTION_FOLDER):
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, default)  # appended, unless it is there already
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(WEIGHT_SUFFIXES))


def _paths_of(name: str) -> list[str]:
    folder_paths = _folder_paths()
    if folder_paths is None or name not in folder_paths.folder_names_and_paths:
        return []
    return list(folder_paths.get_folder_paths(name))


def codeformer_files() -> list[str]:
    """The weights files in the CodeFormer folders (names as ComfyUI lists them), each once."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return []
    names: list[str] = []
    for folder in CODEFORMER_FOLDERS:
        if folder in folder_paths.folder_names_and_paths:
            listed = folder_paths.get_filename_list(folder)
            names += [name for name in listed if os.path.splitext(name)[1].lower() in WEIGHT_SUFFIXES and name not in names]
    return names


def codeformer_path(name: str) -> str | None:
    """The full path of a listed weights file, None where no CodeFormer folder has it."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return None
    for folder in CODEFORMER_FOLDERS:
        if folder in folder_paths.folder_names_and_paths:
            found = folder_paths.get_full_path(folder, name)
            if found:
                return found
    return None


def codeformer_folders() -> list[str]:
    """Where CodeFormer weights are looked for, and (the first) where the official file is downloaded."""
    return [path for name in CODEFORMER_FOLDERS for path in _paths_of(name)]


def detection_folders() -> list[str]:
    """Where RetinaFace and ParseNet weights are looked for (models/facedetection first), and downloaded."""
    return _paths_of(DETECTION_FOLDER)


def device() -> str:
    """The device ComfyUI runs models on (the CPU under --cpu)."""
    management = _model_management()
    return str(management.get_torch_device()) if management is not None else "cpu"


def offload_device() -> str:
    """Where models wait between runs: ComfyUI's offload device (the CPU unless --highvram)."""
    management = _model_management()
    return str(management.unet_offload_device()) if management is not None else "cpu"


def make_room(needed_bytes: int, target: str) -> None:
    """Offload other models until ``needed_bytes`` are free on ``target``, as ComfyUI's own model nodes do."""
    management = _model_management()
    if management is None or target.startswith("cpu"):
        return
    import torch

    management.free_memory(needed_bytes, torch.device(target))  # a real device: with None, nothing is freed


def free_bytes(target: str) -> int | None:
    management = _model_management()
    if management is None:
        return None
    import torch

    return int(management.get_free_memory(torch.device(target)))


def empty_cache() -> None:
    management = _model_management()
    if management is not None:
        management.soft_empty_cache()


def interrupted() -> bool:
    """Whether the user pressed Cancel (asked between network batches)."""
    management = _model_management()
    return bool(management is not None and management.processing_interrupted())


def raise_if_interrupted() -> None:
    """ComfyUI's own interrupt exception when Cancel was pressed (the executor reports it as interrupted)."""
    management = _model_management()
    if management is not None:
        management.throw_exception_if_processing_interrupted()


def is_interrupt(error: BaseException) -> bool:
    """ComfyUI's interrupt: a BaseException in 0.33, an Exception in 0.3.64, so a broad except must let it pass."""
    management = _model_management()
    return management is not None and isinstance(error, management.InterruptProcessingException)


class Progress:
    """ComfyUI's progress bar on the running node; a total that grows is allowed (faces found image by image)."""

    def __init__(self, total: int) -> None:
        try:
            from comfy.utils import ProgressBar
        except ImportError:
            self.bar = None
        else:
            self.bar = ProgressBar(max(1, total))

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update_absolute(done, max(1, total))
