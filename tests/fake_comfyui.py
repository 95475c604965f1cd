"""A small fake of the ComfyUI modules the node pack touches, in both generations it supports.

``folder_paths`` (the model folders, with ComfyUI's rules for names that
extra_model_paths.yaml created first), ``comfy.model_management`` (device,
offload, free memory, Cancel; its interrupt exception a ``BaseException`` as
in 0.33 or an ``Exception`` as in 0.3.64) and ``comfy.utils.ProgressBar``.
Installed into ``sys.modules`` for one test; what the pack asked of it is
recorded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


class FakeComfyUI:
    def __init__(self, base: Path, *, generation: str = "0.33") -> None:
        import torch

        self.base = base
        self.models_dir = base / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.generation = generation
        self.interrupted = False
        self.device = "cpu"
        self.freed: list[tuple[int, str]] = []
        self.emptied = 0
        self.progress: list[tuple[int, int]] = []
        fake = self

        folder_paths = types.ModuleType("folder_paths")
        folder_paths.models_dir = str(self.models_dir)
        folder_paths.supported_pt_extensions = set(SUPPORTED)
        folder_paths.folder_names_and_paths = {"upscale_models": ([str(self.models_dir / "upscale_models")], set(SUPPORTED))}

        def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
            table = folder_paths.folder_names_and_paths
            if folder_name in table:
                paths = table[folder_name][0]
                if full_folder_path in paths:
                    if is_default:
                        paths.remove(full_folder_path)
                        paths.insert(0, full_folder_path)
                else:
                    paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
            else:
                table[folder_name] = ([full_folder_path], set())

        def get_folder_paths(folder_name: str) -> list[str]:
            return folder_paths.folder_names_and_paths[folder_name][0][:]

        def get_filename_list(folder_name: str) -> list[str]:
            paths, extensions = folder_paths.folder_names_and_paths[folder_name]
            found = set()
            for folder in paths:
                for root, _, files in os.walk(folder, followlinks=True):
                    for name in files:
                        if not extensions or os.path.splitext(name)[1].lower() in extensions:
                            found.add(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
            return sorted(found)

        def get_full_path(folder_name: str, filename: str) -> str | None:
            if folder_name not in folder_paths.folder_names_and_paths:
                return None
            for folder in folder_paths.folder_names_and_paths[folder_name][0]:
                path = os.path.join(folder, filename)
                if os.path.isfile(path):
                    return path
            return None

        folder_paths.add_model_folder_path = add_model_folder_path
        folder_paths.get_folder_paths = get_folder_paths
        folder_paths.get_filename_list = get_filename_list
        folder_paths.get_full_path = get_full_path

        management = types.ModuleType("comfy.model_management")
        base_class = BaseException if generation == "0.33" else Exception
        management.InterruptProcessingException = type("InterruptProcessingException", (base_class,), {})
        management.get_torch_device = lambda: torch.device(fake.device)
        management.unet_offload_device = lambda: torch.device("cpu")
        management.free_memory = lambda memory_required, device, keep_loaded=(): fake.freed.append((memory_required, str(device)))
        management.get_free_memory = lambda dev=None, torch_free_too=False: 24 * 2**30
        management.soft_empty_cache = lambda force=False: setattr(fake, "emptied", fake.emptied + 1)
        management.processing_interrupted = lambda: fake.interrupted

        def throw_exception_if_processing_interrupted() -> None:
            if fake.interrupted:
                fake.interrupted = False
                raise management.InterruptProcessingException()

        management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total: int, node_id: str | None = None) -> None:
                self.total, self.current = total, 0

            def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
                self.total = total if total is not None else self.total
                self.current = min(value, self.total)
                fake.progress.append((self.current, self.total))

        utils.ProgressBar = ProgressBar
        comfy = types.ModuleType("comfy")
        comfy.model_management, comfy.utils = management, utils
        self.modules = {"folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": management, "comfy.utils": utils}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeComfyUI:
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self

    @property
    def interrupt_exception(self) -> type[BaseException]:
        return self.modules["comfy.model_management"].InterruptProcessingException


def load_pack(name: str = "codeformer_pack"):
    """The repository's root ``__init__.py`` imported as ComfyUI imports a custom node folder (a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
