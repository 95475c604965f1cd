"""Loading checkpoints: every supported layout, and a clear refusal for everything else."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lib_codeformer import CodeFormer, WeightsError, load_codeformer, read_state_dict
from lib_codeformer.frontends.cli import main as cli_main


def assert_same_tensors(model: CodeFormer, state_dict: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert list(loaded) == list(state_dict)
    for key, tensor in state_dict.items():
        assert torch.equal(loaded[key].contiguous(), tensor), key


def test_released_layout_loads_strictly(tmp_path, reference_weights):
    path = tmp_path / "codeformer.pth"
    torch.save({"params_ema": reference_weights}, path)
    model = load_codeformer(path)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert_same_tensors(model, reference_weights)


@pytest.mark.parametrize("layout", ["params_ema", "params", "bare"])
def test_pth_layouts(tmp_path, small_weights, layout):
    path = tmp_path / "weights.ckpt"
    torch.save(small_weights if layout == "bare" else {layout: small_weights}, path)
    assert_same_tensors(load_codeformer(path), small_weights)


def test_safetensors_and_in_memory_state_dict(tmp_path, small_weights):
    path = tmp_path / "weights.safetensors"
    save_file(dict(small_weights), path)
    assert_same_tensors(load_codeformer(path), small_weights)
    assert_same_tensors(load_codeformer(small_weights), small_weights)


def test_half_precision_checkpoint_and_requested_dtype(small_weights):
    half = {k: v.half() for k, v in small_weights.items()}
    model = load_codeformer(half, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


class _WritesAFile:
    """A pickle payload that, when unpickled, creates ``marker`` (what an attack would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    payload = {"params_ema": {"position_emb": _WritesAFile(marker)}}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))

    with pytest.raises(WeightsError, match=r"refused to load .*pickled code"):
        load_codeformer(path)
    assert not marker.exists()

    # The payload is live: an unsafe loader does run it.
    if container == "torch_zip":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.read_text() == "pwned"


@pytest.fixture(scope="module")
def corrupt_files(tmp_path_factory, small_weights) -> dict[str, tuple[Path, str]]:
    """Each damaged file once per module (the good files they are cut from are 70 MB each), with the error it must give."""
    tmp_path = tmp_path_factory.mktemp("corrupt")
    good = tmp_path / "good.pth"
    torch.save({"params_ema": small_weights}, good)
    data = good.read_bytes()
    safetensors = tmp_path / "good.safetensors"
    save_file(dict(small_weights), safetensors)
    safetensors_head = safetensors.read_bytes()[:5000]
    good.unlink()
    safetensors.unlink()

    cases = {}

    def add(name: str, content: bytes, expected: str, suffix: str = ".pth") -> None:
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        cases[name] = (path, expected)

    add("empty", b"", "is empty")
    add("truncated", data[: len(data) // 2], "truncated")
    add("truncated_safetensors", safetensors_head, "truncated or corrupt", ".safetensors")
    add(
        "random_bytes",
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).numpy().tobytes(),
        "not a PyTorch checkpoint",
    )
    add("json", json.dumps({"params_ema": {"a": [1, 2]}}).encode(), "JSON file")
    zip_path = tmp_path / "other.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    add("zip_not_torch", zip_path.read_bytes(), "zip archive but not a PyTorch checkpoint")
    cases["missing"] = (tmp_path / "nowhere" / "codeformer.pth", "does not exist")
    return cases


CORRUPT = ["empty", "truncated", "truncated_safetensors", "random_bytes", "json", "zip_not_torch", "missing"]


@pytest.mark.parametrize("case", CORRUPT)
def test_unusable_files_give_actionable_errors(corrupt_files, case):
    path, expected = corrupt_files[case]
    with pytest.raises(WeightsError, match=expected) as raised:
        load_codeformer(path)
    message = str(raised.value)
    assert str(path) in message
    assert "codeformer.pth" in message  # says where to get a good file


def test_checkpoint_of_another_network_names_missing_and_unexpected_keys(small_weights):
    other = {"conv_body_first.weight": torch.zeros(3, 3), "stylegan_decoder.style_mlp.1.weight": torch.zeros(2)}
    with pytest.raises(WeightsError, match="not a CodeFormer checkpoint") as raised:
        load_codeformer(other)
    message = str(raised.value)
    assert "position_emb" in message and "conv_body_first.weight" in message
    assert "515 tensors missing" in message


def test_wrong_shape_names_key_and_both_shapes(small_weights):
    broken = dict(small_weights)
    broken["generator.blocks.24.weight"] = torch.zeros(3, 32, 5, 5)
    with pytest.raises(WeightsError, match=r"generator.blocks.24.weight has shape \(3, 32, 5, 5\).*needs \(3, 32, 3, 3\)"):
        load_codeformer(broken)


def test_non_finite_values_are_refused(small_weights):
    broken = dict(small_weights)
    tensor = broken["encoder.blocks.5.conv1.weight"].clone()
    tensor[0, 0, 0, 0] = float("nan")
    broken["encoder.blocks.5.conv1.weight"] = tensor
    with pytest.raises(WeightsError, match=r"encoder.blocks.5.conv1.weight contains NaN"):
        load_codeformer(broken)


def test_convert_command_writes_identical_tensors(tmp_path, small_weights, capsys):
    source, destination = tmp_path / "in.pth", tmp_path / "out" / "converted.safetensors"
    torch.save({"params_ema": small_weights}, source)
    assert cli_main(["convert", str(source), str(destination)]) == 0
    converted = read_state_dict(destination)
    assert set(converted) == set(small_weights)
    for key, tensor in small_weights.items():
        assert torch.equal(converted[key], tensor), key
    assert_same_tensors(load_codeformer(destination), small_weights)
    assert not list(destination.parent.glob("*.partial"))


def test_convert_refuses_a_malicious_checkpoint(tmp_path, capsys):
    marker = tmp_path / "marker.txt"
    source = tmp_path / "evil.pth"
    torch.save({"params_ema": {"x": _WritesAFile(marker)}}, source)
    assert cli_main(["convert", str(source), str(tmp_path / "out.safetensors")]) == 1
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_loads_even_where_the_host_replaced_torch_load(tmp_path, small_weights, monkeypatch):
    """AUTOMATIC1111 swaps torch.load for a checker that returns None for newer archive layouts."""
    path = tmp_path / "codeformer-v0.1.0.pth"
    torch.save({"params_ema": small_weights}, path)
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: None)
    assert_same_tensors(load_codeformer(path), small_weights)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_own_reader_on_every_torch_never_torch_load(tmp_path, small_weights, monkeypatch, legacy):
    """torch < 2.6's weights_only has public bypasses; the project's reader is used instead, in both formats."""
    path = tmp_path / "codeformer.pth"
    torch.save({"params_ema": small_weights}, path, _use_new_zipfile_serialization=not legacy)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch's unpickler was called")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    assert_same_tensors(load_codeformer(path), small_weights)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"position_emb": torch.zeros(300, 64)}, "can be built"),  # 300 latent positions: not a square
        ({"position_emb": torch.zeros(64, 64)}, "network for 256 x 256 faces"),  # loads, but cannot take 512 px faces
        ({"fuse_convs_dict.16.scale.0.weight": torch.zeros(1)}, "not a CodeFormer checkpoint"),  # a fusion of no tensors
        ({"fuse_convs_dict.x.scale.0.weight": torch.zeros(1)}, "can be built"),
    ],
)
def test_weights_that_load_but_do_not_fit_are_a_weights_error(small_weights, change, expected):
    """They ended in a traceback from the command line and a 200 "restored 0/1" from the route."""
    broken = {**small_weights, **change}
    with pytest.raises(WeightsError, match=expected):
        load_codeformer(broken)


def test_attention_sizes_that_do_not_divide(small_weights):
    broken = {key: value for key, value in small_weights.items()}
    broken["position_emb"] = torch.zeros(256, 60)  # 60 is not a multiple of the 8 heads assumed
    with pytest.raises(WeightsError):
        load_codeformer(broken)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp_path, small_weights):
    path = tmp_path / "codeformer.pth"
    torch.save({"params_ema": small_weights}, path)
    path.chmod(0)
    with pytest.raises(WeightsError, match="cannot be read"):
        load_codeformer(path)
