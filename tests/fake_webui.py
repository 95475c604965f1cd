"""A small fake of the WebUI contract the extension touches, in three variants.

``a1111``: AUTOMATIC1111 1.10 (``modules.face_restoration``,
``modules.codeformer_model``, ``shared.face_restorers``, ``shared.opts`` with
``OptionInfo``, ``script_callbacks``, ``devices.device_codeformer``,
``cmd_opts.use_cpu``, ``call_queue.queue_lock``, ``ui_components.InputAccordion``,
``launch.is_installed/run_pip``). ``forge``: the same plus
``modules_forge.utils.prepare_free_memory`` and ``--always-cpu``. ``sdnext``:
SD.Next after February 2026: no face restoration modules at all.

Scripts are loaded the way the hosts load them: the file is executed as a
module and every class in its namespace that subclasses ``Script`` or
``ScriptPostprocessing`` is registered (the trap that registers an imported
base class too is reproduced).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import threading
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "codeformer_postprocess.py"
HOST_MODULES = ("modules", "modules_forge", "launch")


class OptionInfo:
    """AUTOMATIC1111 1.10's and Forge's: sections are filed under a category (modules/options.py)."""

    def __init__(
        self, default=None, label="", component=None, component_args=None, onchange=None, section=None, category_id=None
    ):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.category_id = onchange, section, category_id
        self.comment_after = ""

    def info(self, text: str) -> OptionInfo:
        """Shown under the setting (AUTOMATIC1111 1.6 and later); returns the option, as there."""
        self.comment_after += f"<span class='info'>({text})</span>"
        return self


class FakeUpscaler:
    """AUTOMATIC1111's ``modules.upscaler.Upscaler`` contract: ``upscale(img, scale, selected_model)`` (PIL in and out),
    enlarged to the scale (rounded down to a multiple of 8, as there); every call recorded."""

    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def upscale(self, img, scale, selected_model=None):
        from PIL import Image

        self.calls.append((self.name, img.size, scale, selected_model))
        if self.name == "None":
            return img
        size = (int(img.width * scale // 8 * 8), int(img.height * scale // 8 * 8))
        return img.resize(size, resample=Image.LANCZOS)


class UpscalerData:
    """``modules.upscaler.UpscalerData``: what ``shared.sd_upscalers`` lists."""

    def __init__(self, name: str, path, upscaler) -> None:
        self.name, self.data_path, self.scaler = name, path, upscaler


class SDNextOptionInfo:
    """SD.Next's before 2025 (no category_id keyword: passing one is a TypeError); sections are flat there."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section, self.category_id = onchange, section, None


class Options:
    def __init__(self) -> None:
        self.data: dict = {}
        self.data_labels: dict = {}

    def add_option(self, key, info) -> None:
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def set(self, key, value) -> None:
        self.data[key] = value
        info = self.data_labels.get(key)
        if info is not None and info.onchange is not None:
            info.onchange()

    def __getattr__(self, item):
        if item in ("data", "data_labels"):
            raise AttributeError(item)
        if item in self.data:
            return self.data[item]
        raise AttributeError(item)


class State:
    def __init__(self) -> None:
        self.progress_log: list[tuple[int, int]] = []
        self.interrupted = self.skipped = self.stopping_generation = False
        self.sampling_steps = 0
        self.sampling_step = 0
        self.progress_log.clear()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "sampling_step":
            self.progress_log.append((value, self.sampling_steps))


class BuiltinRestorer:
    """One of the host's own face restorers: counts its calls so tests can tell it ran."""

    def __init__(self, name: str) -> None:
        self.calls = 0
        self.listed_as = name

    def name(self):
        return self.listed_as

    def restore(self, np_image, w=None):
        self.calls += 1
        return np_image


class PostprocessedImage:
    def __init__(self, image):
        self.image = image
        self.info: dict = {}


class Processing:
    """Enough of StableDiffusionProcessing for restore faces and infotext."""

    def __init__(self) -> None:
        self.extra_generation_params: dict = {}
        self.restore_faces = True


class FakeHost:
    def __init__(self, variant: str, models_path: Path, cmd: dict | None = None) -> None:
        assert variant in ("a1111", "forge", "sdnext")
        self.variant = variant
        self.models_path = models_path
        self.callbacks: dict[str, list] = {"ui_settings": [], "app_started": []}
        self.script_classes: list[type] = []
        self.postprocessing_classes: list[type] = []
        self.prepare_free_memory_calls = 0
        self.pip_calls: list[str] = []
        self.installed: set[str] = set()
        self.builtin = BuiltinRestorer("CodeFormer") if variant != "sdnext" else None
        self.gfpgan = BuiltinRestorer("GFPGAN") if variant != "sdnext" else None
        self.modules = self._build(cmd or {})

    # Building the modules.

    def _build(self, cmd: dict) -> dict[str, types.ModuleType]:
        made: dict[str, types.ModuleType] = {}

        def module(name: str, **attributes) -> types.ModuleType:
            mod = types.ModuleType(name)
            mod.__dict__.update(attributes)
            made[name] = mod
            return mod

        cmd_opts = types.SimpleNamespace(
            use_cpu=[], codeformer_models_path=None, gfpgan_models_path=None, api_auth=None, api=True, nowebui=False
        )
        if self.variant == "forge":
            cmd_opts.always_cpu = False
        cmd_opts.__dict__.update(cmd)
        shared = module(
            "modules.shared",
            opts=Options(),
            cmd_opts=cmd_opts,
            state=State(),
            OptionInfo=SDNextOptionInfo if self.variant == "sdnext" else OptionInfo,
        )
        if self.variant != "sdnext":
            shared.face_restorers = [self.builtin, self.gfpgan]  # AUTOMATIC1111's start-up order
        self.upscale_calls: list = []
        shared.sd_upscalers = [
            UpscalerData(name, None, FakeUpscaler(name, self.upscale_calls)) for name in ("None", "Lanczos", "Nearest")
        ]

        class Script:
            pass

        class ScriptPostprocessing:
            name = None
            order = 1000

        module("modules.scripts", Script=Script, AlwaysVisible=object())
        module("modules.scripts_postprocessing", ScriptPostprocessing=ScriptPostprocessing, PostprocessedImage=PostprocessedImage)
        module(
            "modules.script_callbacks",
            on_ui_settings=lambda fn, **_: self.callbacks["ui_settings"].append(fn),
            on_app_started=lambda fn, **_: self.callbacks["app_started"].append(fn),
        )
        devices = module("modules.devices", device="cpu", torch_gc=lambda: None, cpu="cpu")
        if self.variant != "sdnext":  # SD.Next has devices.device and devices.dtype only
            devices.device_codeformer = "cpu"
        module("modules.paths", models_path=str(self.models_path), script_path=str(self.models_path.parent))
        module("modules.call_queue", queue_lock=threading.Lock())
        if self.variant != "sdnext":

            class FaceRestoration:
                def name(self):
                    return "None"

                def restore(self, np_image):
                    return np_image

            def restore_faces(np_image):
                chosen = [
                    r for r in shared.face_restorers if r.name() == shared.opts.data.get("face_restoration_model", "CodeFormer")
                ]
                return chosen[0].restore(np_image) if chosen else np_image

            module("modules.face_restoration", FaceRestoration=FaceRestoration, restore_faces=restore_faces)
            module("modules.codeformer_model", codeformer=self.builtin)
            shared.opts.data.update(
                {"face_restoration_model": "CodeFormer", "code_former_weight": 0.5, "face_restoration_unload": False}
            )

            class InputAccordion:
                """A checkbox shown as an accordion (gradio 3 and 4)."""

                def __init__(self, value, **kwargs):
                    import gradio as gr

                    self.checkbox = gr.Checkbox(value, visible=False, elem_id=f"{kwargs.get('elem_id')}-checkbox")
                    self.accordion = gr.Accordion(kwargs.get("label", "Accordion"), open=value, elem_id=kwargs.get("elem_id"))

                def __enter__(self):
                    self.accordion.__enter__()
                    return self.checkbox

                def __exit__(self, *exc):
                    return self.accordion.__exit__(*exc)

            module("modules.ui_components", InputAccordion=InputAccordion)
        if self.variant == "forge":

            def prepare_free_memory(aggressive=False):
                self.prepare_free_memory_calls += 1

            module("modules_forge")
            module("modules_forge.utils", prepare_free_memory=prepare_free_memory)
            made["modules_forge"].utils = made["modules_forge.utils"]
        modules = module("modules")
        for name, mod in list(made.items()):
            if name.startswith("modules.") and name.count(".") == 1:
                setattr(modules, name.split(".")[1], mod)

        def run_pip(command, desc=None, live=False):
            self.pip_calls.append(command)

        module("launch", is_installed=lambda package: package in self.installed, run_pip=run_pip, args=cmd_opts)
        return made

    # Using it.

    def install(self) -> None:
        for name in [n for n in sys.modules if n.split(".")[0] in HOST_MODULES]:
            del sys.modules[name]
        sys.modules.update(self.modules)

    def load_script(self, path: Path = SCRIPT) -> types.ModuleType:
        """Execute the script as the hosts do and register its script classes."""
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        script_base = self.modules["modules.scripts"].Script
        postprocessing_base = self.modules["modules.scripts_postprocessing"].ScriptPostprocessing
        for value in module.__dict__.values():
            if inspect.isclass(value) and issubclass(value, script_base):
                self.script_classes.append(value)
            elif inspect.isclass(value) and issubclass(value, postprocessing_base):
                self.postprocessing_classes.append(value)
        return module

    def run_ui_settings(self) -> None:
        for callback in self.callbacks["ui_settings"]:
            callback()

    def start_app(self):
        from fastapi import FastAPI

        app = FastAPI()
        for callback in self.callbacks["app_started"]:
            callback(None, app)
        return app

    @property
    def shared(self):
        return self.modules["modules.shared"]

    def restore_faces(self, image: np.ndarray) -> np.ndarray:
        return self.modules["modules.face_restoration"].restore_faces(image)

    def uninstall(self) -> None:
        for name in [n for n in sys.modules if n.split(".")[0] in HOST_MODULES]:
            del sys.modules[name]
