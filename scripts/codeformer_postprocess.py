"""WebUI glue: the one module that touches the host (AUTOMATIC1111 1.10, Forge, SD.Next).

It reads the host's settings, devices and job state, registers the face
restorer, the Extras step, the settings, the infotext hook and the API
routes, and delegates everything else to ``lib_codeformer``. Host modules
are imported as modules, never their classes: the WebUI registers every
script class it finds in this module's namespace, an imported base class too.
"""

from __future__ import annotations

import inspect
import logging
import os

import gradio as gr
import numpy as np
from modules import script_callbacks, scripts, scripts_postprocessing, shared
from PIL import Image

from lib_codeformer import options as codeformer_options
from lib_codeformer.frontends.webui import controls as codeformer_ui
from lib_codeformer.frontends.webui import runtime as codeformer_webui

try:  # gone from SD.Next since February 2026: there this extension is the only face restorer
    from modules import face_restoration
except ImportError:
    face_restoration = None

logger = logging.getLogger("codeformer")

EXTENSION_NAME = "CodeFormer (extension)"
BUILTIN_NAME = "CodeFormer"
SECTION = ("codeformer", "CodeFormer")  # two parts: SD.Next reads a third one differently (category first)
# AUTOMATIC1111 and Forge file settings sections under categories; Face restoration is in "postprocessing".
CATEGORY = "postprocessing"
TAKEOVER = codeformer_options.BY_KEY["takeover"]


def _opt(key: str, default=None):
    opts = getattr(shared, "opts", None)
    data = getattr(opts, "data", None) or {}
    return data.get(key, default)


def _cmd(name: str, default=None):
    return getattr(getattr(shared, "cmd_opts", None), name, default)


def _settings() -> dict:
    """Every setting of ours by option key; the host's own "unload" setting counts too."""
    values = {option.key: _opt(option.setting_key, option.control_default) for option in codeformer_webui.SETTING_OPTIONS}
    values["unload"] = bool(values["unload"] or _opt("face_restoration_unload", False))
    return values


def _host_device() -> str:
    """--use-cpu codeformer/all (every host) and Forge's --always-cpu mean the CPU; else the host's device."""
    use_cpu = _cmd("use_cpu") or []
    if "all" in use_cpu or "codeformer" in use_cpu or _cmd("always_cpu", False):
        return "cpu"
    from modules import devices

    device = getattr(devices, "device_codeformer", None) or getattr(devices, "device", None)
    return str(device) if device is not None else "cpu"


def _model_dirs() -> tuple[list[str], list[str]]:
    from modules import paths

    models = getattr(paths, "models_path", "models")
    codeformer = _cmd("codeformer_models_path") or os.path.join(models, "Codeformer")
    gfpgan = _cmd("gfpgan_models_path") or os.path.join(models, "GFPGAN")
    return [str(codeformer)], [str(gfpgan)]


def _prepare_memory() -> None:
    """Forge frees VRAM for a model before moving it to the GPU; elsewhere nothing to do."""
    try:
        from modules_forge import utils as forge_utils
    except ImportError:
        return
    forge_utils.prepare_free_memory()


def _release_memory() -> None:
    from modules import devices

    if hasattr(devices, "torch_gc"):
        devices.torch_gc()


def _upscaler_names() -> list[str]:
    return [upscaler.name for upscaler in getattr(shared, "sd_upscalers", None) or []] or ["None"]


def _host_upscale(image: np.ndarray, scale: float, name: str) -> np.ndarray:
    """Through the host's own upscaler (its device, its tiling): ``Upscaler.upscale(img, scale, model path)``."""
    chosen = next((upscaler for upscaler in shared.sd_upscalers if upscaler.name == name), None)
    if chosen is None:
        raise ValueError(f"the WebUI has no upscaler named {name!r}")
    return np.asarray(chosen.scaler.upscale(Image.fromarray(image), scale, chosen.data_path).convert("RGB"))


def _face_progress(done: int, total: int) -> None:
    state = getattr(shared, "state", None)
    if state is not None:
        state.sampling_steps = total
        state.sampling_step = done


def _should_stop() -> bool:
    state = getattr(shared, "state", None)
    return bool(state is not None and (state.interrupted or state.skipped or getattr(state, "stopping_generation", False)))


_codeformer_dirs, _gfpgan_dirs = _model_dirs()
runtime = codeformer_webui.shared_runtime(
    codeformer_webui.HostServices(
        settings=_settings,
        device=_host_device,
        model_dirs=_codeformer_dirs,
        detector_model_dirs=_gfpgan_dirs,
        prepare_memory=_prepare_memory,
        release_memory=_release_memory,
        upscaler_names=_upscaler_names,
        upscale=_host_upscale,
    )
)


def _takeover() -> bool:
    return bool(_opt(TAKEOVER.setting_key, TAKEOVER.default))


_FaceRestorationBase = face_restoration.FaceRestoration if face_restoration is not None else object


class CodeFormerFaceRestorer(_FaceRestorationBase):
    """The host's face restorer interface, over the extension's pipeline, under one of its two names."""

    codeformer_extension = True

    def __init__(self, listed_as: str) -> None:
        self.listed_as = listed_as

    def name(self) -> str:
        return self.listed_as

    def restore(self, np_image: np.ndarray, p=None, w: float | None = None) -> np.ndarray:
        """AUTOMATIC1111 passes the image; SD.Next adds ``p``; the built-in Extras step (and other extensions) pass ``w``.

        Only a generation's "Restore faces" (no ``w``) is left to the panel when the panel is on for this
        generation: a stale panel state (a generation that raised) never swallows an Extras or API call.
        """
        if w is None and runtime.panel() is not None:  # the panel restores this generation's images itself
            return np_image
        values = {}
        if w is not None:
            values["fidelity"] = w
        elif _opt("code_former_weight") is not None:  # the host's own "CodeFormer weight" setting
            values["fidelity"] = _opt("code_former_weight")
        outcome = runtime.restore(np_image, values, progress=_face_progress, should_stop=_should_stop)
        runtime.remember(outcome)
        if p is not None and hasattr(p, "extra_generation_params"):
            p.extra_generation_params.update(outcome.infotext())
        return outcome.image


def register_face_restorer() -> None:
    """Put our restorer in the host's list, keeping the host's order; idempotent (Reload UI imports this again).

    "CodeFormer (extension)" is always listed (at the end); with the takeover on, our restorer also takes the
    built-in's place under its name "CodeFormer". So either name selected as the face restoration model
    keeps working whatever the takeover setting.
    """
    restorers = getattr(shared, "face_restorers", None)
    if restorers is None:
        return
    try:
        from modules import codeformer_model
    except ImportError:
        codeformer_model = None
    state = runtime.host_state
    listed = [r for r in restorers if not getattr(r, "codeformer_extension", False)]
    builtin = next((r for r in listed if r.name() == BUILTIN_NAME), None) or state.get("builtin")
    if builtin is not None and builtin in listed:
        state["builtin"], state["builtin_index"] = builtin, listed.index(builtin)
    elif builtin is not None:
        listed.insert(min(state.get("builtin_index", len(listed)), len(listed)), builtin)
    takeover = _takeover()
    ours = CodeFormerFaceRestorer(BUILTIN_NAME)
    if takeover:
        if builtin is not None:
            listed[listed.index(builtin)] = ours
        else:
            listed.append(ours)
    restorers[:] = [*listed, CodeFormerFaceRestorer(EXTENSION_NAME)]
    if codeformer_model is not None:
        codeformer_model.codeformer = ours if takeover or builtin is None else builtin


def _extras_image(image) -> Image.Image:
    if isinstance(image, dict):  # gradio 4 image editors hand over a dict
        image = image.get("composite") or image.get("image") or image.get("background")
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


class CodeFormerExtras(scripts_postprocessing.ScriptPostprocessing):
    name = EXTENSION_NAME
    order = 3001  # just after the built-in CodeFormer (3000)

    def ui(self):
        return codeformer_ui.extras_controls(gr, _input_accordion(), upscalers=_upscaler_names())

    def process_firstpass(self, pp, **values):
        runtime.take_last()  # forget restorations made elsewhere; only this image's count below
        runtime.begin_generation(None)  # no generation is running on this thread: no panel state may linger

    def process(self, pp, **values):
        """Called by the host for each image; API callers leave controls as None, which means disabled."""
        if not values.get("enable"):
            # The built-in CodeFormer step (order 3000, taken over) may have just run: say what it did,
            # and say so when it did nothing (the built-in's own info claims a restoration regardless).
            outcome = runtime.take_last()
            if outcome is not None:
                pp.info.update(outcome.infotext())
            return
        image = _extras_image(pp.image)
        mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB"
        outcome = runtime.restore(np.array(image.convert(mode)), values, progress=_face_progress, should_stop=_should_stop)
        pp.image = Image.fromarray(outcome.image)
        pp.info.update(outcome.infotext())


class CodeFormerPanel(scripts.Script):
    """The CodeFormer accordion in txt2img and img2img, applied to each generated image.

    Also writes what "Restore faces" did into the image's parameters. When
    both the panel and the taken-over "Restore faces" are on, the panel
    alone restores (once, with its own options).
    """

    def title(self):
        return EXTENSION_NAME

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        controls = codeformer_ui.panel_controls(gr, _input_accordion(), "img2img" if is_img2img else "txt2img")
        self.infotext_fields = codeformer_webui.infotext_fields(controls)
        return list(controls.values())

    def process(self, p, *args):
        values = codeformer_webui.panel_values(args)
        runtime.begin_generation(values if values.get("enable") else None)

    def postprocess_image(self, p, pp, *args):
        values = codeformer_webui.panel_values(args)
        if values.get("enable"):
            image = pp.image
            mode = "RGBA" if image.mode == "RGBA" else "RGB"
            outcome = runtime.restore(np.array(image.convert(mode)), values, progress=_face_progress, should_stop=_should_stop)
            pp.image = Image.fromarray(outcome.image)
        else:
            outcome = runtime.take_last()  # what "Restore faces" did to this image, if anything
        if outcome is not None and hasattr(p, "extra_generation_params"):
            p.extra_generation_params.update(outcome.infotext())

    def postprocess(self, p, processed, *args):
        runtime.begin_generation(None)


def _input_accordion():
    try:
        from modules import ui_components
    except ImportError:
        return None
    return getattr(ui_components, "InputAccordion", None)


def on_ui_settings() -> None:
    """Every option shown in the settings, labelled so that searching Settings for "CodeFormer" finds each."""
    takes_category = "category_id" in inspect.signature(shared.OptionInfo).parameters
    for option in codeformer_webui.SETTING_OPTIONS:
        extra = {"category_id": CATEGORY} if takes_category else {}
        if option is TAKEOVER:
            extra["onchange"] = register_face_restorer
        component, arguments = codeformer_ui.component_of(gr, option)
        if option.key == "face_upscaler":  # the host's upscalers, listed when the settings page is built
            component, arguments = gr.Dropdown, lambda: {"choices": _upscaler_names()}
        label = codeformer_webui.setting_label(option)
        info = shared.OptionInfo(option.control_default, label, component, arguments or None, section=SECTION, **extra)
        if hasattr(info, "info"):  # AUTOMATIC1111 and Forge show it under the setting
            info = info.info(option.help)
        shared.opts.add_option(option.setting_key, info)


def _api_enabled() -> bool:
    """The WebUI serves an API only with --api (or API-only with --nowebui); SD.Next always does (its --api defaults on)."""
    return bool(_cmd("api", False) or _cmd("nowebui", False))


def _max_pixels() -> int:
    """The limit the request body is held to; a broken setting is reported when the image is restored."""
    try:
        return int(runtime.settings()["max_pixels"])
    except ValueError:
        return codeformer_options.DEFAULT_MAX_PIXELS


def on_app_started(demo, app) -> None:
    if not _api_enabled():
        logger.info("CodeFormer: the /codeformer/v1 API routes are not added: the WebUI runs without --api")
        return
    if any(getattr(route, "path", "").startswith("/codeformer/v1/") for route in app.routes):
        return
    from modules import call_queue

    from lib_codeformer.frontends import http_api as api

    # --api-auth protects the WebUI's own API; routes an extension adds get nothing unless it adds it.
    auth = api.parse_api_auth(_cmd("api_auth"))
    api.add_routes(
        app,
        runtime.restore,
        lock=call_queue.queue_lock,
        max_pixels=_max_pixels,
        auth=auth,
        host_choices=lambda: {"face_upscaler": _upscaler_names()},
    )


register_face_restorer()
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
