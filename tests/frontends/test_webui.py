"""The extension through fake WebUI hosts: registration, takeover, Extras, settings, infotext, API."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from fake_webui import ROOT, FakeHost, PostprocessedImage, Processing
from lib_codeformer.frontends.http_api import encode_png
from lib_codeformer.frontends.webui import runtime as codeformer_webui
from lib_codeformer.options import BY_KEY
from lib_codeformer.version import __version__

# The Extras step's controls, in the order the host passes them.
EXTRAS_CONTROLS = (
    "enable",
    "fidelity",
    "visibility",
    "detector",
    "confidence",
    "faces",
    "max_faces",
    "min_face_size",
    "blend",
    "mask",
    "color_correction",
    "face_upscaler",
)


def make_host(variant, tmp_path, small_weights_file, monkeypatch, **cmd):
    monkeypatch.setattr(codeformer_webui, "_RUNTIME", None)
    host = FakeHost(variant, tmp_path / "models", cmd)
    host.install()
    host.shared.opts.data.update({"codeformer_weights_path": str(small_weights_file), "codeformer_detector": "yunet"})
    host.script = host.load_script()
    host.run_ui_settings()
    return host


@pytest.fixture(params=["a1111", "forge", "sdnext"])
def host(request, tmp_path, small_weights_file, monkeypatch):
    host = make_host(request.param, tmp_path, small_weights_file, monkeypatch)
    yield host
    host.uninstall()


@pytest.fixture
def a1111(tmp_path, small_weights_file, monkeypatch):
    host = make_host("a1111", tmp_path, small_weights_file, monkeypatch)
    yield host
    host.uninstall()


def ours(host):
    return [r for r in host.shared.face_restorers if getattr(r, "codeformer_extension", False)]


def test_registers_only_its_own_script_classes(host):
    assert [c.__name__ for c in host.postprocessing_classes] == ["CodeFormerExtras"]
    assert [c.__name__ for c in host.script_classes] == ["CodeFormerPanel"]
    extras = host.postprocessing_classes[0]
    assert extras.name == "CodeFormer (extension)" and extras.order == 3001


@pytest.mark.parametrize("variant", ["a1111", "forge"])
def test_takes_over_the_builtin_codeformer(variant, tmp_path, small_weights_file, monkeypatch, astronaut):
    host = make_host(variant, tmp_path, small_weights_file, monkeypatch)
    restorers = host.shared.face_restorers
    assert [r.name() for r in restorers] == ["CodeFormer", "GFPGAN", "CodeFormer (extension)"]  # the host's order kept
    assert restorers[0] in ours(host) and restorers[1] is host.gfpgan
    assert host.modules["modules.codeformer_model"].codeformer is restorers[0]
    restored = host.restore_faces(astronaut)  # "Restore faces" in txt2img/img2img
    assert not np.array_equal(restored, astronaut) and host.builtin.calls == 0
    # The built-in Extras step and the extras API call codeformer_model.codeformer.restore(image, w=...).
    again = host.modules["modules.codeformer_model"].codeformer.restore(astronaut, w=1.0)
    assert not np.array_equal(again, restored)
    host.uninstall()


def test_takeover_off_and_on_keeps_the_hosts_order(a1111, astronaut):
    """Reported in the real AUTOMATIC1111: after off and on, "CodeFormer" came after "GFPGAN"."""
    a1111.shared.opts.set("codeformer_takeover", False)
    assert [r.name() for r in a1111.shared.face_restorers] == ["CodeFormer", "GFPGAN", "CodeFormer (extension)"]
    assert a1111.shared.face_restorers[0] is a1111.builtin
    assert a1111.modules["modules.codeformer_model"].codeformer is a1111.builtin
    a1111.restore_faces(astronaut)
    assert a1111.builtin.calls == 1
    a1111.shared.opts.set("codeformer_takeover", True)
    assert [r.name() for r in a1111.shared.face_restorers] == ["CodeFormer", "GFPGAN", "CodeFormer (extension)"]
    assert a1111.shared.face_restorers[0] in ours(a1111)
    assert a1111.modules["modules.codeformer_model"].codeformer is a1111.shared.face_restorers[0]


@pytest.mark.parametrize("variant", ["a1111", "forge"])
@pytest.mark.parametrize("takeover", [True, False])
def test_either_name_keeps_working_whatever_the_takeover(variant, takeover, tmp_path, small_weights_file, monkeypatch, astronaut):
    """Takeover off, "CodeFormer (extension)" chosen, takeover on again: Restore faces still restores."""
    host = make_host(variant, tmp_path, small_weights_file, monkeypatch)
    host.shared.opts.set("codeformer_takeover", not takeover)
    host.shared.opts.data["face_restoration_model"] = "CodeFormer (extension)"
    host.shared.opts.set("codeformer_takeover", takeover)
    assert not np.array_equal(host.restore_faces(astronaut), astronaut)
    assert host.builtin.calls == 0
    host.shared.opts.data["face_restoration_model"] = "CodeFormer"
    restored = host.restore_faces(astronaut)
    assert host.builtin.calls == (0 if takeover else 1)  # "CodeFormer" is ours with the takeover, else the host's
    assert np.array_equal(restored, astronaut) is not takeover
    host.uninstall()


def test_reload_is_idempotent(a1111):
    a1111.load_script()
    a1111.load_script()
    assert len(a1111.shared.face_restorers) == 3 and len(ours(a1111)) == 2
    a1111.shared.opts.set("codeformer_takeover", False)
    names = [r.name() for r in a1111.shared.face_restorers]
    assert names == ["CodeFormer", "GFPGAN", "CodeFormer (extension)"]  # the built-in came back once, not lost in a reload


def test_extras_step_with_real_values(host, astronaut):
    script = host.postprocessing_classes[0]()
    pp = PostprocessedImage(Image.fromarray(astronaut))
    values = {
        "enable": True,
        "fidelity": 0.3,
        "visibility": 1.0,
        "detector": "yunet",
        "confidence": 0.0,
        "faces": "all",
        "max_faces": 0,
        "min_face_size": 0,
        "blend": 1.0,
        "mask": "box",
        "color_correction": False,
    }
    script.process(pp, **values)
    assert not np.array_equal(np.asarray(pp.image), astronaut)
    assert pp.info["CodeFormer fidelity"] == 0.3 and pp.info["CodeFormer restored"] == "1/1"
    assert pp.info["CodeFormer detector"] == "yunet"


def test_extras_step_called_by_the_api_with_every_control_none(host, astronaut):
    script = host.postprocessing_classes[0]()
    pp = PostprocessedImage(Image.fromarray(astronaut))
    script.process(
        pp,
        **dict.fromkeys(EXTRAS_CONTROLS),
    )
    assert np.array_equal(np.asarray(pp.image), astronaut) and pp.info == {}
    enabled_only = PostprocessedImage(Image.fromarray(astronaut))
    script.process(enabled_only, enable=True, fidelity=None, detector=None)
    assert enabled_only.info["CodeFormer restored"] == "1/1"


def test_extras_keeps_alpha_and_visibility_blends(host, astronaut):
    script = host.postprocessing_classes[0]()
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 77, np.uint8)])
    pp = PostprocessedImage(Image.fromarray(rgba))
    script.process(pp, enable=True, visibility=0.0)
    assert pp.image.mode == "RGBA" and np.array_equal(np.asarray(pp.image), rgba)


def test_restore_signatures_of_every_host(a1111, astronaut):
    restorer = ours(a1111)[0]
    p = Processing()
    restorer.restore(astronaut, p)  # SD.Next passes p
    assert p.extra_generation_params["CodeFormer restored"] == "1/1"
    assert p.extra_generation_params["CodeFormer fidelity"] == 0.5  # the host's code_former_weight
    a1111.shared.opts.data["code_former_weight"] = 0.9
    restorer.restore(astronaut)
    assert codeformer_webui.shared_runtime(codeformer_webui._RUNTIME.services).take_last().values["fidelity"] == 0.9


def test_infotext_of_restore_faces(a1111, astronaut):
    script = a1111.script_classes[0]()
    p = Processing()
    a1111.restore_faces(astronaut)
    script.postprocess_image(p, PostprocessedImage(None))
    expected = {"CodeFormer fidelity": 0.5, "CodeFormer restored": "1/1", "CodeFormer detector": "yunet"}
    assert p.extra_generation_params == {**expected, "CodeFormer version": __version__}
    second = Processing()
    script.postprocess_image(second, PostprocessedImage(None))  # nothing restored since: nothing written
    assert second.extra_generation_params == {}


def test_missing_weights_leave_the_image_and_say_so_once(a1111, astronaut, tmp_path, caplog):
    a1111.shared.opts.data["codeformer_weights_path"] = str(tmp_path / "missing.pth")
    restorer = ours(a1111)[0]
    p = Processing()
    with caplog.at_level(logging.ERROR, logger="codeformer"):
        first = restorer.restore(astronaut, p)
        second = restorer.restore(astronaut)
    assert first is astronaut and second is astronaut
    assert (
        "not applied" in p.extra_generation_params["CodeFormer"] and "does not exist" in p.extra_generation_params["CodeFormer"]
    )
    assert caplog.text.count("does not exist") == 1
    message = p.extra_generation_params["CodeFormer"]
    # WebUI wording: where to put the file and which setting to fill, not the command line's --weights.
    assert "Settings > CodeFormer > CodeFormer weights file" in message
    assert str(a1111.models_path / "Codeformer" / "codeformer.pth") in message and "--weights" not in message


def test_settings_section_and_defaults(host):
    labels = host.shared.opts.data_labels
    keys = {key for key in labels if key.startswith("codeformer_")}
    assert {
        "codeformer_takeover",
        "codeformer_fidelity",
        "codeformer_detector",
        "codeformer_confidence",
        "codeformer_faces",
        "codeformer_device",
        "codeformer_unload",
        "codeformer_weights_path",
        "codeformer_mask",
        "codeformer_fast_conv",
    } <= keys
    assert all(labels[key].section == ("codeformer", "CodeFormer") for key in keys)
    # Next to Face restoration (AUTOMATIC1111's "postprocessing" category), not under "Uncategorized";
    # SD.Next files sections flat and an older one refuses the keyword.
    expected_category = None if host.variant == "sdnext" else "postprocessing"
    assert all(labels[key].category_id == expected_category for key in keys)
    assert labels["codeformer_fidelity"].default == 0.5


@pytest.mark.parametrize(
    ("cmd", "expected"), [({"use_cpu": ["codeformer"]}, "cpu"), ({"use_cpu": ["all"]}, "cpu"), ({}, "cuda:0")]
)
def test_device_honours_use_cpu(cmd, expected, tmp_path, small_weights_file, monkeypatch):
    host = make_host("a1111", tmp_path, small_weights_file, monkeypatch, **cmd)
    host.modules["modules.devices"].device_codeformer = "cuda:0"
    assert host.script._host_device() == expected
    host.uninstall()


def test_forge_always_cpu_and_memory_hand_off(tmp_path, small_weights_file, monkeypatch):
    host = make_host("forge", tmp_path, small_weights_file, monkeypatch, always_cpu=True)
    host.modules["modules.devices"].device = "cuda:0"
    host.modules["modules.devices"].device_codeformer = None
    assert host.script._host_device() == "cpu"
    host.script._prepare_memory()
    assert host.prepare_free_memory_calls == 1
    host.uninstall()


def test_progress_and_interrupt(a1111, astronaut):
    restorer = ours(a1111)[0]
    restorer.restore(astronaut)
    assert a1111.shared.state.progress_log[-1] == (1, 1)
    a1111.shared.state.interrupted = True
    assert np.array_equal(restorer.restore(astronaut), astronaut)


@pytest.fixture
def client(host):
    from fastapi.testclient import TestClient

    app = host.start_app()
    host.callbacks["app_started"][0](None, app)  # a second start (Reload UI) adds nothing
    assert sum(getattr(r, "path", "").startswith("/codeformer/v1/") for r in app.routes) == 2
    return TestClient(app)


def test_api_restore(client, astronaut):
    response = client.post("/codeformer/v1/restore", json={"image": encode_png(astronaut), "detector": "yunet", "fidelity": 0.7})
    assert response.status_code == 200, response.text
    body = response.json()
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
    assert image.shape == astronaut.shape and not np.array_equal(image, astronaut)
    assert len(body["faces"]) == 1 and body["faces"][0]["restored"] and len(body["faces"][0]["landmarks"]) == 5
    assert body["info"]["CodeFormer fidelity"] == 0.7


def test_api_options_schema(client):
    options = {o["key"]: o for o in client.get("/codeformer/v1/options").json()["options"]}
    assert options["fidelity"]["default"] == 0.5 and options["fidelity"]["maximum"] == 1.0
    assert options["detector"]["choices"] == ["auto", "retinaface_resnet50", "retinaface_mobile0.25", "yunet"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"fidelity": 2}, 422, "fidelity"),
        ({"faces": "leftmost"}, 422, "faces"),
        ({"fidelty": 0.5}, 422, "fidelty"),
        ({"image": "not base64!!"}, 400, "base64"),
        ({"image": base64.b64encode(b"hello, not an image").decode()}, 400, "could not be decoded"),
        ({"image": ""}, 400, "empty"),
    ],
)
def test_api_bad_requests_are_4xx_with_a_reason(client, astronaut, body, status, fragment):
    request = {"image": encode_png(astronaut[:64, :64]), **body}
    response = client.post("/codeformer/v1/restore", json=request)
    assert response.status_code == status
    assert fragment in response.text


def test_api_missing_weights_is_503_with_the_reason(client, host, astronaut, tmp_path):
    host.shared.opts.data["codeformer_weights_path"] = str(tmp_path / "missing.pth")
    response = client.post("/codeformer/v1/restore", json={"image": encode_png(astronaut), "detector": "yunet"})
    assert response.status_code == 503 and "does not exist" in response.json()["detail"]


def test_extras_ui_builds_with_this_gradio(host):
    import gradio as gr

    with gr.Blocks():
        controls = host.postprocessing_classes[0]().ui()
    assert list(controls) == list(EXTRAS_CONTROLS)
    assert controls["fidelity"].label == "Fidelity w (0 = best quality, 1 = most faithful)"
    assert controls["detector"].value == "auto"  # RetinaFace where it can be had, else YuNet: what it shows is true
    assert all(c.elem_id.startswith("codeformer_ext_extras_") for key, c in controls.items() if key != "enable")
    # The help is each control's tooltip (javascript/codeformer_options.js), not printed under it a second time.
    assert not any(getattr(c, "info", None) for key, c in controls.items() if key != "enable")
    tooltips = (ROOT / "javascript" / "codeformer_options.js").read_text()
    assert all(json.dumps(BY_KEY[key].help, ensure_ascii=False) in tooltips for key in controls if key != "enable")


def test_settings_components_build_with_this_gradio(host):
    import gradio as gr

    with gr.Blocks():
        for key, info in host.shared.opts.data_labels.items():
            if key.startswith("codeformer_"):
                component = info.component or gr.Textbox
                arguments = info.component_args() if callable(info.component_args) else info.component_args  # as hosts do
                component(label=info.label, value=info.default, **(arguments or {}))
                # Every settings load, AUTOMATIC1111 sends gr.update(value=..., **arguments) without precision; gradio 3
                # applies it through the component's own update(), which takes fewer arguments than its constructor.
                update = getattr(component, "update", None)
                if update is not None and gr.__version__.startswith("3."):
                    update(value=info.default, **{k: v for k, v in (arguments or {}).items() if k != "precision"})


def test_without_yuface_the_user_is_told_what_to_install(a1111, astronaut, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yuface", None)  # as if install.py never ran
    p = Processing()
    restored = ours(a1111)[0].restore(astronaut, p)
    assert restored is astronaut
    assert "pip install yuface" in p.extra_generation_params["CodeFormer"]


def panel(host):
    return host.script_classes[0]()


def generate(host, image, *args, restore_faces=False):
    """What the host does around one generated image: process, (Restore faces), postprocess_image, postprocess."""
    script = panel(host)
    p = Processing()
    script.process(p, *args)
    if restore_faces:
        p.extra_generation_params["Face restoration"] = "CodeFormer"
        image = host.restore_faces(image)
    pp = PostprocessedImage(Image.fromarray(image))
    script.postprocess_image(p, pp, *args)
    script.postprocess(p, None, *args)
    return np.asarray(pp.image), p.extra_generation_params


def test_panel_ui_builds_with_this_gradio(host):
    import gradio as gr

    script = panel(host)
    with gr.Blocks():
        components = script.ui(False)
    assert [c.elem_id for c in components[1:]] == [
        f"codeformer_ext_txt2img_{key}"
        for key in ("fidelity", "faces", "max_faces", "min_face_size", "blend", "mask", "color_correction")
    ]
    assert len(script.infotext_fields) == len(components)


def test_panel_restores_each_generated_image(host, astronaut):
    restored, params = generate(host, astronaut, True, 0.7, "largest")
    assert not np.array_equal(restored, astronaut)
    assert params["CodeFormer fidelity"] == 0.7 and params["CodeFormer faces"] == "largest"
    assert params["CodeFormer restored"] == "1/1"
    untouched, nothing = generate(host, astronaut, False, 0.7)
    assert np.array_equal(untouched, astronaut) and nothing == {}


@pytest.mark.parametrize("variant", ["a1111", "forge"])
def test_panel_and_restore_faces_restore_once(variant, tmp_path, small_weights_file, monkeypatch, astronaut):
    host = make_host(variant, tmp_path, small_weights_file, monkeypatch)
    both, params = generate(host, astronaut, True, 0.7, restore_faces=True)
    panel_only, _ = generate(host, astronaut, True, 0.7)
    np.testing.assert_array_equal(both, panel_only)
    assert params["CodeFormer fidelity"] == 0.7
    restore_only, restore_params = generate(host, astronaut, False, restore_faces=True)
    assert not np.array_equal(restore_only, astronaut) and restore_params["CodeFormer fidelity"] == 0.5
    host.uninstall()


def paste(fields, params):
    """What the WebUI's paste (PNG Info, "send to txt2img") sets each panel component to."""
    return [key(params) if callable(key) else params.get(key) for _, key in fields]


def test_panel_values_round_trip_through_the_infotext(a1111, astronaut):
    import gradio as gr

    script = panel(a1111)
    with gr.Blocks():
        script.ui(False)
    args = [True, 0.25, "center", 2, 16, 0.8, "box", True]
    _, params = generate(a1111, astronaut, *args)
    text = {key: str(value) for key, value in params.items()}  # infotext values come back as strings
    pasted = paste(script.infotext_fields, text)
    assert pasted[0] is True
    assert [float(pasted[1]), pasted[2], int(pasted[3]), int(pasted[4]), float(pasted[5]), pasted[6], pasted[7]] == [
        0.25,
        "center",
        2,
        16,
        0.8,
        "box",
        "True",
    ]
    _, restore_faces_params = generate(a1111, astronaut, False, restore_faces=True)
    assert paste(script.infotext_fields, restore_faces_params)[0] is False  # Restore faces' infotext does not enable the panel
    assert paste(script.infotext_fields, {})[1:3] == [0.5, "all"]  # absent options reset to defaults


def test_panel_through_alwayson_scripts_args(host, astronaut):
    """The txt2img/img2img API passes the panel's args positionally, possibly fewer than the UI has."""
    restored, params = generate(host, astronaut, True, 0.3)
    assert not np.array_equal(restored, astronaut) and params["CodeFormer fidelity"] == 0.3
    _, defaults = generate(host, astronaut, True)
    assert defaults["CodeFormer fidelity"] == 0.5


def test_api_routes_demand_the_webui_api_credentials(tmp_path, small_weights_file, monkeypatch, astronaut):
    from fastapi.testclient import TestClient

    host = make_host("a1111", tmp_path, small_weights_file, monkeypatch, api_auth="alice:s3cret,bob:hunter2")
    client = TestClient(host.start_app())
    for route, call in (("/codeformer/v1/options", client.get), ("/codeformer/v1/restore", client.post)):
        assert call(route).status_code == 401
        assert call(route, auth=("alice", "wrong")).status_code == 401
        assert call(route, auth=("mallory", "s3cret")).status_code == 401
    assert client.get("/codeformer/v1/options", auth=("bob", "hunter2")).status_code == 200
    body = {"image": encode_png(astronaut[:64, :64]), "detector": "yunet"}
    assert client.post("/codeformer/v1/restore", json=body, auth=("alice", "s3cret")).status_code == 200
    host.uninstall()


def test_api_auth_parsing():
    from lib_codeformer.frontends.http_api import parse_api_auth

    assert parse_api_auth("a:b,c:d:e, f:") == {"a": "b", "c": "d:e", "f": ""}
    assert parse_api_auth(None) == {} and parse_api_auth("nocolon") == {}


def test_extras_refuses_images_over_the_pixel_limit(a1111, astronaut):
    a1111.shared.opts.data["codeformer_max_pixels"] = 100 * 100
    pp = PostprocessedImage(Image.fromarray(astronaut))
    a1111.postprocessing_classes[0]().process(pp, enable=True)
    assert np.array_equal(np.asarray(pp.image), astronaut)
    assert "over the limit of 10000" in pp.info["CodeFormer"]


@pytest.mark.parametrize("enabled", [True, False])
def test_fast_convolutions_follow_their_setting(a1111, astronaut, fast_conv_calls, enabled):
    a1111.shared.opts.data["codeformer_fast_conv"] = enabled
    pp = PostprocessedImage(Image.fromarray(astronaut))
    a1111.postprocessing_classes[0]().process(pp, enable=True)
    assert pp.info["CodeFormer restored"] == "1/1"
    assert bool(fast_conv_calls) is enabled


def test_sdnext_device_comes_from_devices_device(tmp_path, small_weights_file, monkeypatch):
    host = make_host("sdnext", tmp_path, small_weights_file, monkeypatch)
    host.modules["modules.devices"].device = "cuda:1"
    assert not hasattr(host.modules["modules.devices"], "device_codeformer")
    assert host.script._host_device() == "cuda:1"
    host.uninstall()


class RecordingRestorer:
    """Stands in for FaceRestorer where a test is about where the runtime moves the models."""

    def __init__(self, weights, *, device, calls, **_):
        import torch

        self.device, self.calls, self.fast_conv = torch.device(device), calls, True

    def to(self, device):
        import torch

        self.calls.append(f"to {device}")
        self.device = torch.device(device)

    def restore(self, image, **_):
        from lib_codeformer.restorer import RestoreResult

        self.calls.append(f"restore on {self.device}")
        return RestoreResult(image)


@pytest.mark.parametrize("unload", [True, False])
def test_gpu_use_frees_memory_first_and_moves_every_model_off_after(monkeypatch, unload):
    from lib_codeformer import restorer as restorer_module

    calls = []
    monkeypatch.setattr(restorer_module, "FaceRestorer", lambda weights, **kw: RecordingRestorer(weights, calls=calls, **kw))
    services = codeformer_webui.HostServices(
        settings=lambda: {"unload": unload},
        device=lambda: "cuda",
        prepare_memory=lambda: calls.append("prepare"),
        release_memory=lambda: calls.append("release"),
    )
    runtime = codeformer_webui.ExtensionRuntime(services)
    image = np.zeros((8, 8, 3), np.uint8)
    assert runtime.restore(image).error is None
    assert runtime.restore(image).error is None
    once = ["prepare", "to cuda", "restore on cuda"] + (["to cpu", "release"] if unload else [])
    assert calls == once * 2


def test_moving_the_restorer_moves_every_model(small_weights, tmp_path):
    """The detector and the parser follow the network (they stayed on the GPU before); "meta" stands in for a GPU."""
    import torch
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    from lib_codeformer import FaceRestorer, load_codeformer
    from lib_codeformer.network.synthetic import random_weights_like

    torch.save(random_weights_like(ParseNet(in_size=512, out_size=512, parsing_ch=19), 1), tmp_path / "parsing_parsenet.pth")
    retinaface = random_weights_like(RetinaFace(network_name="resnet50", half=False, device="cpu"), 2)
    torch.save(retinaface, tmp_path / "detection_Resnet50_Final.pth")
    network = load_codeformer(small_weights)
    restorer = FaceRestorer(network, detector="retinaface_resnet50", device="cpu", detector_model_dirs=[tmp_path], download=False)
    models = [restorer.network, restorer.detector().model, restorer.parser.model]
    from lib_codeformer import restorer as restorer_module

    real_check = restorer_module.checked_device
    with pytest.MonkeyPatch.context() as patch:  # "meta" is no device a user may ask for: the check lets it through here
        patch.setattr(restorer_module, "checked_device", lambda d: torch.device(d) if str(d) == "meta" else real_check(d))
        patch.setattr(restorer_module, "check_precision", lambda precision, device: None)
        restorer.to("meta")
    assert all(p.device.type == "meta" for model in models for p in model.parameters())
    assert restorer.detector().model.device == torch.device("meta") and restorer.device == torch.device("meta")


@pytest.mark.parametrize("variant", ["a1111", "forge"])
def test_builtin_extras_step_gets_our_info(variant, tmp_path, small_weights_file, monkeypatch, astronaut):
    """The built-in Extras CodeFormer (taken over) runs just before our step; our step reports what it did."""
    host = make_host(variant, tmp_path, small_weights_file, monkeypatch)
    ours_step = host.postprocessing_classes[0]()
    pp = PostprocessedImage(Image.fromarray(astronaut))
    ours_step.process_firstpass(pp)
    host.modules["modules.codeformer_model"].codeformer.restore(astronaut, w=0.3)  # the built-in step's call
    ours_step.process(pp, **dict.fromkeys(EXTRAS_CONTROLS))
    assert pp.info["CodeFormer restored"] == "1/1" and pp.info["CodeFormer fidelity"] == 0.3
    later = PostprocessedImage(Image.fromarray(astronaut))
    ours_step.process_firstpass(later)
    ours_step.process(later, **dict.fromkeys(EXTRAS_CONTROLS))
    assert later.info == {}  # nothing ran for this image: nothing reported
    host.uninstall()


@pytest.mark.parametrize(("cmd", "routes"), [({"api": False}, 0), ({"api": False, "nowebui": True}, 2), ({"api": True}, 2)])
def test_routes_only_where_the_host_serves_its_api(cmd, routes, tmp_path, small_weights_file, monkeypatch):
    """Without --api the WebUI has no API (--listen/--share would expose a compute-heavy route --gradio-auth misses)."""
    host = make_host("a1111", tmp_path, small_weights_file, monkeypatch, **cmd)
    app = host.start_app()
    assert sum(getattr(r, "path", "").startswith("/codeformer/v1/") for r in app.routes) == routes
    host.uninstall()


def test_route_follows_the_largest_image_setting(client, host, astronaut):
    """The limit was fixed at start-up (100 MP) whatever the setting said; it is read per request, from the header."""
    body = {"image": encode_png(astronaut), "detector": "yunet"}
    host.shared.opts.data["codeformer_max_pixels"] = 100_000
    refused = client.post("/codeformer/v1/restore", json=body)
    assert refused.status_code == 413 and "512 x 512 pixels is over the limit of 100000" in refused.text
    host.shared.opts.data["codeformer_max_pixels"] = 300_000
    assert client.post("/codeformer/v1/restore", json=body).status_code == 200


def test_request_bodies_over_the_limit_are_refused_before_they_are_read(client, host):
    from lib_codeformer.frontends.http_api import max_body_bytes

    host.shared.opts.data["codeformer_max_pixels"] = 10_000
    limit = max_body_bytes(10_000)
    declared = client.post("/codeformer/v1/restore", content=b"x" * 10, headers={"Content-Length": str(limit + 1)})
    assert declared.status_code == 413 and "limit" in declared.text

    def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    streamed = client.post("/codeformer/v1/restore", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


@pytest.mark.parametrize("variant", ["a1111", "forge"])
def test_a_generation_that_raised_leaves_no_panel_state_behind(variant, tmp_path, small_weights_file, monkeypatch, astronaut):
    """The host skips postprocess when a generation raises; the next Extras call on that thread must still restore."""
    host = make_host(variant, tmp_path, small_weights_file, monkeypatch)
    panel(host).process(Processing(), True, 0.7)  # the panel is on for a generation ... that then raises: no postprocess
    extras = host.postprocessing_classes[0]()
    pp = PostprocessedImage(Image.fromarray(astronaut))
    extras.process_firstpass(pp)
    restored = host.modules["modules.codeformer_model"].codeformer.restore(astronaut, w=0.5)  # the built-in Extras step
    extras.process(pp, **dict.fromkeys(EXTRAS_CONTROLS))
    assert not np.array_equal(restored, astronaut)
    assert pp.info["CodeFormer restored"] == "1/1"
    # Even without the Extras step's first pass (another extension calling the built-in with a fidelity):
    panel(host).process(Processing(), True, 0.7)
    assert not np.array_equal(host.modules["modules.codeformer_model"].codeformer.restore(astronaut, w=0.5), astronaut)
    host.uninstall()


def test_large_faces_are_enlarged_by_the_hosts_upscaler_chosen_in_extras(host, astronaut):
    import cv2

    script = host.postprocessing_classes[0]()
    controls = dict(zip(EXTRAS_CONTROLS, [True, 0.5, 1.0, "yunet", 0.0, "all", 0, 0, 1.0, "box", False, "Lanczos"], strict=True))
    portrait = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # its face's crop: about 700 px
    pp = PostprocessedImage(Image.fromarray(portrait))
    script.process(pp, **controls)
    ((name, size, scale, _),) = host.upscale_calls  # once, through the host's own upscaler
    assert name == "Lanczos" and size == (512, 512) and 1.2 < scale < 1.5
    assert pp.info["CodeFormer face upscaler"] == "Lanczos (1 faces)"
    host.upscale_calls.clear()
    small = PostprocessedImage(Image.fromarray(astronaut))  # a face smaller than the crop: nothing to enlarge
    script.process(small, **controls)
    assert host.upscale_calls == [] and "CodeFormer face upscaler" not in small.info
    none = PostprocessedImage(Image.fromarray(portrait))
    script.process(none, **{**controls, "face_upscaler": "None"})
    assert host.upscale_calls == [] and "CodeFormer face upscaler" not in none.info
    unknown = PostprocessedImage(Image.fromarray(portrait))
    script.process(unknown, **{**controls, "face_upscaler": "4x-Missing"})
    assert np.array_equal(np.asarray(unknown.image), portrait)  # nothing lost
    assert "no upscaler named '4x-Missing'" in unknown.info["CodeFormer"]


def test_the_upscaler_control_and_setting_list_the_hosts_upscalers(host):
    import gradio as gr

    with gr.Blocks():
        controls = host.postprocessing_classes[0]().ui()
    names = ["None", "Lanczos", "Nearest"]
    assert list(controls["face_upscaler"].choices) in (names, [(name, name) for name in names])  # gradio 3, gradio 4
    info = host.shared.opts.data_labels["codeformer_face_upscaler"]
    assert info.component_args()["choices"] == ["None", "Lanczos", "Nearest"] and info.default == "None"
    assert info.label.startswith("CodeFormer: ")


def test_the_api_takes_the_face_upscaler_by_the_hosts_name(client, host, astronaut):
    import cv2

    portrait = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    body = {"image": encode_png(portrait), "detector": "yunet", "face_upscaler": "Lanczos"}
    response = client.post("/codeformer/v1/restore", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["info"]["CodeFormer face upscaler"] == "Lanczos (1 faces)"
    assert [call[0] for call in host.upscale_calls] == ["Lanczos"]
    listed = {entry["key"]: entry for entry in client.get("/codeformer/v1/options").json()["options"]}
    assert listed["face_upscaler"]["choices"] == ["None", "Lanczos", "Nearest"]  # the host's own
    missing = client.post("/codeformer/v1/restore", json={**body, "face_upscaler": "4x-Missing"})
    assert missing.status_code == 503 and "no upscaler named '4x-Missing'" in missing.json()["detail"]
