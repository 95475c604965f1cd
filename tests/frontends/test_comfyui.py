"""The ComfyUI node pack, against a fake of the ComfyUI modules it touches (tests/fake_comfyui.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from fake_comfyui import ROOT, FakeComfyUI

from lib_codeformer import options
from lib_codeformer.frontends.comfyui import host, nodes


@pytest.fixture(params=["0.33", "0.3.64"])
def comfy(request, tmp_path, monkeypatch) -> FakeComfyUI:
    fake = FakeComfyUI(tmp_path / "ComfyUI", generation=request.param).install(monkeypatch)
    host.register_model_folders()
    return fake


@pytest.fixture
def loaded(comfy, small_weights_file) -> nodes.CodeFormerModel:
    folder = comfy.models_dir / "facerestore_models"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(small_weights_file, folder / "codeformer-small.safetensors")
    (model,) = nodes.LoadCodeFormer().load("codeformer-small.safetensors")
    model.restorer.detector_name = "yunet"  # the tests' faces are found by YuNet (no detector download)
    return model


def as_image(*arrays: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)


def defaults(node_options) -> dict:
    return {option.key: option.control_default for option in node_options}


def restore_values(**given) -> dict:
    return {**defaults(nodes.RESTORE_OPTIONS), "detector": "yunet", **given}


def test_the_pack_imports_cleanly_without_comfyui_and_imports_nothing_heavy():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "pack = importlib.util.module_from_spec(spec); sys.modules['pack'] = pack; spec.loader.exec_module(pack)\n"
        "print(sorted(pack.NODE_CLASS_MAPPINGS), 'torch' in sys.modules, 'folder_paths' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    names = "['CodeFormerLoader', 'CodeFormerRestoreFaces', 'CodeFormerRestoreVideoFrames']"
    assert result.stdout.strip() == f"{names} False False"


def test_the_tests_run_from_a_clone_whose_folder_name_is_no_python_name(tmp_path):
    """pytest imports the root __init__.py (the pack) as a lone file, without a package, where the clone's folder is
    no Python name (``mktemp -d`` makes ``tmp.k0qM0gNJrr``): that import registers nothing, and must not fail."""
    clone = tmp_path / "tmp.k0qM0gNJrr"
    (clone / "tests").mkdir(parents=True)
    for name in ("__init__.py", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    shutil.copytree(ROOT / "lib_codeformer", clone / "lib_codeformer", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "tests" / "test_collected.py").write_text("def test_collected():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=clone,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]


def test_install_py_does_nothing_where_there_is_no_webui(tmp_path):
    """ComfyUI-Manager runs every pack's install.py; there is no `launch` module there."""
    result = subprocess.run([sys.executable, str(ROOT / "install.py")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_model_folders_are_added_without_replacing_what_is_there(tmp_path, monkeypatch):
    fake = FakeComfyUI(tmp_path / "ComfyUI").install(monkeypatch)
    table = fake.modules["folder_paths"].folder_names_and_paths
    table["facerestore_models"] = (["/mnt/shared/faces"], set())  # as extra_model_paths.yaml made it, before us
    host.register_model_folders()
    host.register_model_folders()  # ComfyUI may import a pack twice (reloads): nothing doubles
    assert table["facerestore_models"] == (["/mnt/shared/faces", str(fake.models_dir / "facerestore_models")], set())
    assert table["codeformer"] == ([str(fake.models_dir / "codeformer")], {".pth", ".safetensors"})
    assert table["facedetection"][0] == [str(fake.models_dir / "facedetection")]
    assert "upscale_models" in table  # other folders untouched


def test_the_inputs_are_the_declared_options(comfy):
    required = nodes.RestoreFaces.INPUT_TYPES()["required"]
    assert list(required)[:2] == ["codeformer", "image"]
    for option in nodes.RESTORE_OPTIONS:
        kind, settings = required[option.key]
        assert settings["default"] == option.control_default and settings["tooltip"] == option.help
        if option.choices:
            assert kind == list(option.choices)
        elif option.type is bool:
            assert kind == "BOOLEAN"
        else:
            assert kind == ("INT" if option.type is int else "FLOAT")
            assert (settings["min"], settings["max"]) == (option.control_minimum, option.maximum)
    video = nodes.RestoreVideoFrames.INPUT_TYPES()["required"]
    assert {"detect_every", "steady", *(option.key for option in nodes.RESTORE_OPTIONS)} <= set(video)
    assert {option.key for option in nodes.RESTORE_OPTIONS} == {
        option.key for option in options.shown_in(options.COMFYUI) if option.scope == options.RESTORE
    }


def test_the_loader_lists_both_folders_and_offers_the_official_file_where_it_is_missing(comfy, small_weights_file):
    """codeformer.pth is always listed (first), so a saved workflow validates whether or not the file is there yet."""
    assert nodes.LoadCodeFormer.INPUT_TYPES()["required"]["model_name"][0] == ["codeformer.pth"]
    for folder, name in (("facerestore_models", "a.safetensors"), ("codeformer", "b.pth"), ("codeformer", "notes.txt")):
        (comfy.models_dir / folder).mkdir(parents=True, exist_ok=True)
        (comfy.models_dir / folder / name).write_bytes(b"x")
    assert nodes.LoadCodeFormer.INPUT_TYPES()["required"]["model_name"][0] == ["codeformer.pth", "a.safetensors", "b.pth"]
    (comfy.models_dir / "codeformer" / "codeformer.pth").write_bytes(b"x")
    assert nodes.LoadCodeFormer.INPUT_TYPES()["required"]["model_name"][0] == ["codeformer.pth", "a.safetensors", "b.pth"]
    assert host.codeformer_path("codeformer.pth") == str(comfy.models_dir / "codeformer" / "codeformer.pth")


def test_the_loaded_model_is_shared_and_its_detectors_come_from_facedetection(loaded, comfy):
    again = nodes.LoadCodeFormer().load("codeformer-small.safetensors")[0]
    assert again is loaded
    assert loaded.restorer.detector_model_dirs == [str(comfy.models_dir / "facedetection")]


def test_a_file_that_is_not_codeformer_is_refused_with_what_to_do(comfy):
    folder = comfy.models_dir / "facerestore_models"
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({"conv_first.weight": torch.zeros(64, 3, 3, 3)}, str(folder / "GFPGANv1.4.safetensors"))
    with pytest.raises(nodes.CodeFormerNodeError, match=r"^CodeFormer weights: .*is not a CodeFormer checkpoint") as refused:
        nodes.LoadCodeFormer().load("GFPGANv1.4.safetensors")
    assert "GFPGANv1.4.safetensors" in str(refused.value) and "CodeFormer: CodeFormer" not in str(refused.value)
    with pytest.raises(nodes.CodeFormerNodeError, match="refresh the page"):
        nodes.LoadCodeFormer().load("gone.pth")


def test_faces_are_restored_and_everything_else_comes_back_exactly(loaded, comfy, astronaut):
    gradient = np.tile(np.linspace(0, 255, astronaut.shape[1], dtype=np.float32)[None, :, None], (astronaut.shape[0], 1, 3))
    batch = as_image(astronaut, gradient)
    image, mask, report = nodes.RestoreFaces().restore(loaded, batch, **restore_values())
    assert image.shape == batch.shape and image.dtype == batch.dtype and mask.shape == batch.shape[:3]
    assert torch.equal(image[1], batch[1]) and float(mask[1].max()) == 0.0  # no face: bit for bit
    assert not torch.equal(image[0], batch[0])
    touched = mask[0] > 0
    assert touched.any() and not touched.all()
    untouched = ~touched
    assert torch.equal(image[0][untouched], batch[0][untouched])  # outside the pasted faces: the input's floats
    assert report.splitlines() == [
        "image 1: 1 face found, 1 restored, detector yunet",
        "image 2: 0 faces found, 0 restored, detector yunet",
    ]
    assert comfy.progress and comfy.progress[-1][0] == comfy.progress[-1][1] == 1  # per face


def test_options_are_checked_by_their_rule_and_said_in_its_words(loaded, comfy, astronaut):
    with pytest.raises(nodes.CodeFormerNodeError, match=r"fidelity must be a number in \[0, 1\] \(got 2\)"):
        nodes.RestoreFaces().restore(loaded, as_image(astronaut), **restore_values(fidelity=2))
    with pytest.raises(nodes.CodeFormerNodeError, match="max_face_size must be >= min_face_size"):
        nodes.RestoreFaces().restore(loaded, as_image(astronaut), **restore_values(min_face_size=90, max_face_size=50))


WRONG = [torch.zeros(3, 64, 64), torch.zeros(1, 3, 64, 64), torch.zeros(0, 8, 8, 3), np.zeros((1, 8, 8, 3))]


@pytest.mark.parametrize("wrong", WRONG)
def test_a_wrong_tensor_is_refused_with_its_shape(loaded, comfy, wrong):
    with pytest.raises(nodes.CodeFormerNodeError, match=r"IMAGE|empty"):
        nodes.RestoreFaces().restore(loaded, wrong, **restore_values())


def test_cancel_is_comfyuis_own_interrupt_never_a_failure(loaded, comfy, astronaut):
    comfy.interrupted = True
    with pytest.raises(comfy.interrupt_exception):
        nodes.RestoreFaces().restore(loaded, as_image(astronaut, astronaut), **restore_values())


def test_video_frames_are_restored_steadily(loaded, comfy, face_frames):
    frames = face_frames(6, second_shot=False)  # one shot, one face
    batch = as_image(*frames)
    restored, mask, report = nodes.RestoreVideoFrames().restore(
        loaded, batch, **restore_values(), **defaults(nodes.VIDEO_OPTIONS)
    )
    assert restored.shape == batch.shape and mask.shape == batch.shape[:3]
    assert report == "6 frames: 6 faces restored over the clip, 1 face followed"
    for index in range(len(frames)):
        untouched = mask[index] == 0
        assert torch.equal(restored[index][untouched], batch[index][untouched])
    assert comfy.progress[-1] == (6, 6)
    with pytest.raises(nodes.CodeFormerNodeError, match="detect_every must be a whole number in"):
        video = {**defaults(nodes.VIDEO_OPTIONS), "detect_every": 0}
        nodes.RestoreVideoFrames().restore(loaded, batch, **restore_values(), **video)


def test_a_device_it_cannot_run_on_falls_back_to_the_cpu(loaded, comfy, astronaut, caplog):
    comfy.device = "cuda:3"  # no such GPU here
    _, _, report = nodes.RestoreFaces().restore(loaded, as_image(astronaut), **restore_values())
    assert "1 restored" in report and "using the CPU" in caplog.text


class Doubling(torch.nn.Module):
    """Stands in for Load Upscale Model's output (a spandrel model: called with a tensor, has a scale)."""

    scale = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic").clamp(0, 1)


def test_an_upscale_model_enlarges_large_faces_only(loaded, comfy, astronaut):
    import cv2

    upscaler = Doubling()
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # its crop covers about 700 px there
    _, _, report = nodes.RestoreFaces().restore(loaded, as_image(big), upscale_model=upscaler, **restore_values())
    assert upscaler.calls >= 1 and "1 restored, 1 enlarged" in report, report
    upscaler.calls = 0
    _, _, report = nodes.RestoreFaces().restore(loaded, as_image(astronaut), upscale_model=upscaler, **restore_values())
    assert upscaler.calls == 0 and "enlarged" not in report  # a 200 px face: nothing to enlarge
    assert loaded.restorer.face_upscaler is None  # only for that run
    with pytest.raises(nodes.CodeFormerNodeError, match="Load Upscale Model"):
        nodes.RestoreFaces().restore(loaded, as_image(astronaut), upscale_model="x4.pth", **restore_values())


def test_the_example_workflow_matches_the_nodes():
    """examples/comfyui_restore_faces.json: its widget values in each node's widget order, valid, its links typed."""
    import json

    workflow = json.loads((ROOT / "examples" / "comfyui_restore_faces.json").read_text())
    nodes_by_id = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        cls = nodes.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            continue  # ComfyUI's own nodes
        widgets = [
            (name, spec)
            for name, spec in cls.INPUT_TYPES()["required"].items()
            if isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "BOOLEAN", "STRING")
        ]
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        for (name, _), value in zip(widgets, node["widgets_values"], strict=True):
            if name in options.BY_KEY:
                options.BY_KEY[name].parse(value)  # valid by its option's rule
        pairs = zip(widgets, node["widgets_values"], strict=True)
        assert node["widgets_values"] == [spec[1].get("default", value) for (_, spec), value in pairs]  # the defaults
    for _, source, slot, target, _, kind in workflow["links"]:
        cls = nodes.NODE_CLASS_MAPPINGS.get(nodes_by_id[source]["type"])
        if cls is not None:
            assert cls.RETURN_TYPES[slot] == kind
        assert target in nodes_by_id
