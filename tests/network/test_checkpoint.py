"""lib_codeformer.network.checkpoint: torch.save files read without torch.load, and every way to smuggle code in refused.

Round trips compare with what ``torch.load(weights_only=True)`` of the running torch returns for
the same file. Each payload test also shows the payload is live: Python's own unpickler (via
``torch.load(weights_only=False)``) does run it.
"""

from __future__ import annotations

import importlib
import io
import os
import pathlib
import pickle
import pickletools
import struct
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import lib_codeformer.network.checkpoint as checkpoint
from lib_codeformer.network.checkpoint import CheckpointError, UnsafeCheckpointError, read_checkpoint

FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])


def save(obj: object, path: Path, legacy: bool = False, **options: object) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy, **options)
    return path


def small_network() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))


def raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def assert_same(ours: object, reference: object) -> None:
    """Same structure, same container types, tensors equal bit for bit with the same layout (parameters as plain tensors)."""
    if isinstance(reference, torch.Tensor):
        assert type(ours) is torch.Tensor
        assert (ours.dtype, ours.shape, ours.stride(), ours.storage_offset()) == (
            reference.dtype,
            reference.shape,
            reference.stride(),
            reference.storage_offset(),
        )
        assert torch.equal(raw_bytes(ours), raw_bytes(reference))
        return
    assert type(ours) is type(reference)
    if isinstance(reference, dict):
        assert list(ours) == list(reference)
        assert getattr(ours, "_metadata", None) == getattr(reference, "_metadata", None)
        for key in reference:
            assert_same(ours[key], reference[key])
    elif isinstance(reference, list | tuple):
        assert len(ours) == len(reference)
        for mine, theirs in zip(ours, reference, strict=True):
            assert_same(mine, theirs)
    else:
        assert ours == reference


def tensors_in(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list | tuple) else []
    return [tensor for item in items for tensor in tensors_in(item)]


def sharing(obj: object) -> list[list[bool]]:
    """Which tensors share memory with which (tensors of empty storages share nothing)."""
    pointers = [t.untyped_storage().data_ptr() if t.untyped_storage().nbytes() else -1 - i for i, t in enumerate(tensors_in(obj))]
    return [[a == b for b in pointers] for a in pointers]


def assert_round_trip(path: Path, reference: object = None) -> object:
    ours = read_checkpoint(path)
    expected = torch.load(path, map_location="cpu", weights_only=True) if reference is None else reference
    assert_same(ours, expected)
    assert sharing(ours) == sharing(expected)
    return ours


# ---------------------------------------------------------------------------
# Round trips of files written by the running torch.


@FORMATS
def test_params_ema_state_dict(tmp_path, legacy):
    state = small_network().state_dict()
    ours = assert_round_trip(save({"params_ema": state}, tmp_path / "weights.pth", legacy))
    assert ours["params_ema"]._metadata == state._metadata
    assert set(ours["params_ema"]) == set(state)


@FORMATS
def test_bare_ordered_dict_keeps_its_metadata(tmp_path, legacy):
    state = small_network().state_dict()
    ours = assert_round_trip(save(state, tmp_path / "state.pth", legacy))
    assert type(ours) is OrderedDict
    assert ours._metadata == state._metadata != OrderedDict()


@FORMATS
def test_views_share_their_storage(tmp_path, legacy):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {
        "base": base,
        "row": base[1],
        "column": base[:, 2],
        "transposed": base.t(),
        "window": base[1:3, 2:5],
        "expanded": torch.ones(1).expand(3),
        "other": torch.arange(3),
    }
    ours = assert_round_trip(save(saved, tmp_path / "views.pth", legacy))
    assert ours["window"].storage_offset() == 8
    assert not ours["column"].is_contiguous()
    ours["base"][1, 2] = -1.0
    assert ours["row"][2] == ours["column"][1] == ours["window"][0, 0] == -1.0


@FORMATS
def test_dtypes(tmp_path, legacy):
    values = torch.tensor([0.0, -1.5, 2.25, 65504.0])
    saved = {str(dtype): values.to(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32)}
    saved |= {"int8": torch.tensor([-128, 127], dtype=torch.int8), "uint8": torch.tensor([0, 255], dtype=torch.uint8)}
    saved |= {"bool": torch.tensor([True, False, True]), "complex64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64)}
    ours = assert_round_trip(save(saved, tmp_path / "dtypes.pth", legacy))
    assert [tensor.dtype for tensor in ours.values()] == [tensor.dtype for tensor in saved.values()]


@FORMATS
def test_zero_size_and_scalar_tensors(tmp_path, legacy):
    saved = {"empty": torch.zeros(0, 3), "none": torch.empty(0), "slice": torch.arange(5.0)[5:], "scalar": torch.tensor(3.5)}
    ours = assert_round_trip(save(saved, tmp_path / "empty.pth", legacy))
    assert ours["empty"].shape == (0, 3)
    assert ours["scalar"].item() == 3.5


@pytest.mark.parametrize(("legacy", "protocol"), [(False, 2), (True, 2), (False, 4)], ids=["zip", "legacy", "zip-protocol4"])
def test_nested_lists_and_tuples(tmp_path, legacy, protocol):
    saved = {"list": [1, (2.5, "text", None, True), [torch.ones(2), {"inner": (torch.zeros(1), -7)}]], "tuple": (("a",), [])}
    if protocol >= 3:
        saved["bytes"] = b"\x00raw"  # protocol 2 pickles bytes through _codecs.encode, which is refused
    path = save(saved, tmp_path / "nested.pth", legacy, pickle_protocol=protocol)
    # torch's weights-only unpickler cannot read protocol 4; this file is known to be benign.
    assert_round_trip(path, torch.load(path, weights_only=False) if protocol >= 4 else None)


@FORMATS
def test_parameter_saved_directly_comes_back_as_a_plain_tensor(tmp_path, legacy):
    parameter = torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3))
    path = save(parameter, tmp_path / "parameter.pth", legacy)
    assert type(torch.load(path, weights_only=True)) is torch.nn.Parameter
    ours = assert_round_trip(path)
    assert type(ours) is torch.Tensor
    assert not ours.requires_grad


def test_big_endian_archive_is_byte_swapped(tmp_path):
    saved = {
        "half": torch.tensor([1.0, -2.0], dtype=torch.float16),
        "long": torch.tensor([1, 2**40]),
        "byte": torch.tensor([1, 2], dtype=torch.uint8),
        "complex": torch.tensor([1 + 2j], dtype=torch.complex128),
    }
    little = save(saved, tmp_path / "little.pth")
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as source, zipfile.ZipFile(big, "w") as target:
        prefix = source.namelist()[0].split("/")[0]
        storages = {f"{prefix}/data/{index}": tensor for index, tensor in enumerate(saved.values())}
        for member in source.infolist():
            data = source.read(member)
            if member.filename == f"{prefix}/byteorder":
                data = b"big"
            elif member.filename in storages:
                data = storages[member.filename].numpy().byteswap().tobytes()
            target.writestr(member, data)
    ours = assert_round_trip(big)
    assert_same(ours, saved)


# ---------------------------------------------------------------------------
# Hand-crafted pickles.


class Call:
    """Pickles as ``function(*args)``, followed by BUILD with ``state`` if given: the shape of every payload."""

    def __init__(self, function: object, *args: object, state: object = None) -> None:
        self.function, self.args, self.state = function, args, state

    def __reduce__(self) -> tuple:
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)

    def __call__(self) -> None:
        """Pickle accepts only callables as the function of a call; this one is only ever pickled."""
        raise NotImplementedError


class StorageRef:
    """Pickles as the persistent id of storage ``key`` of a zip archive."""

    def __init__(self, key: str, numel: int, storage_type: type = torch.FloatStorage) -> None:
        self.pid = ("storage", storage_type, key, "cpu", numel)


def rebuild(storage: StorageRef, offset: int = 0, size: tuple = (4,), stride: tuple = (1,), state: object = None) -> Call:
    return Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict(), state=state)


def write_archive(path: Path, obj: object = None, storages: dict[str, bytes] | None = None, *, data_pkl: bytes = b"") -> Path:
    """A zip archive laid out like torch.save's, with our own data.pkl next to the given storages."""
    if not data_pkl:
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=2)
        pickler.persistent_id = lambda item: item.pid if isinstance(item, StorageRef) else None
        pickler.dump(obj)
        data_pkl = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


def write_legacy(path: Path, obj: object, storages: dict[str, tuple[int, bytes]]) -> Path:
    """A legacy-format file: magic number, protocol, sys_info, the object, its storage keys, then each element count and bytes."""
    buffer = io.BytesIO()
    for header in (checkpoint.LEGACY_MAGIC, checkpoint.LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda item: (*item.pid, None) if isinstance(item, StorageRef) else None
    pickler.dump(obj)
    pickle.dump(list(storages), buffer, protocol=2)
    for count, data in storages.values():
        buffer.write(count.to_bytes(8, "little") + data)
    path.write_bytes(buffer.getvalue())
    return path


FOUR_FLOATS = {"0": torch.arange(4, dtype=torch.float32).numpy().tobytes()}


def test_hand_written_archive_is_read_like_torch_does(tmp_path):
    path = write_archive(tmp_path / "crafted.pth", {"w": rebuild(StorageRef("0", 4), 1, (2,), (2,))}, FOUR_FLOATS)
    ours = assert_round_trip(path)
    assert ours["w"].tolist() == [1.0, 3.0]


def exec_payload(marker: Path) -> Call:
    return Call(exec, f"open({str(marker)!r}, 'w').close()")


def assert_refused(path: Path, *names: str) -> UnsafeCheckpointError:
    with pytest.raises(UnsafeCheckpointError) as refusal:
        read_checkpoint(path)
    for name in names:
        assert name in refusal.value.globals
        assert name in str(refusal.value)
    return refusal.value


@FORMATS
@pytest.mark.parametrize("payload", ["exec", "os.system"])
def test_reduce_payload_is_refused_and_never_runs(tmp_path, legacy, payload):
    marker = tmp_path / "ran"
    if payload == "exec":
        call, name = exec_payload(marker), "builtins.exec"
    else:
        call, name = Call(os.system, f"touch '{marker}'"), f"{os.system.__module__}.system"
    path = save({"weight": torch.ones(2), "payload": call}, tmp_path / "evil.pth", legacy)
    error = assert_refused(path, name)
    assert error.globals == [name]
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_protocol_4_payload_names_its_global(tmp_path):
    """Protocol 4 imports through STACK_GLOBAL with names from the memo; the pre-scan still names them."""
    marker = tmp_path / "ran"
    path = save({"weight": torch.ones(2), "payload": exec_payload(marker)}, tmp_path / "evil.pth", pickle_protocol=4)
    assert assert_refused(path, "builtins.exec").globals == ["builtins.exec"]
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("hidden_behind", ["torch.serialization.load", "builtins.getattr"])
def test_payload_behind_an_allowed_looking_name_is_refused(tmp_path, hidden_behind):
    marker = tmp_path / "ran"
    if hidden_behind == "torch.serialization.load":
        inner = save({"payload": exec_payload(marker)}, tmp_path / "inner.pth")
        # Passing the pickle module makes every torch version load the inner file without weights_only.
        call = Call(torch.serialization.load, str(inner), None, Call(importlib.import_module, "pickle"))
    else:
        call = Call(Call(getattr, pathlib.Path(marker), "touch"))
    path = save({"weight": torch.ones(2), "payload": call}, tmp_path / "evil.pth")
    assert_refused(path, hidden_behind)
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("function", ["_rebuild_device_tensor_from_numpy", "_rebuild_from_type_v2"])
def test_other_tensor_rebuild_functions_are_refused(tmp_path, function):
    """torch rebuild functions that are not for plain CPU tensors: refused by name, though torch's unpickler would call them."""
    if function == "_rebuild_device_tensor_from_numpy":
        name = "torch._utils._rebuild_device_tensor_from_numpy"
        call = Call(torch._utils._rebuild_device_tensor_from_numpy, np.arange(4, dtype=np.float32), torch.float32, "cpu", False)
    else:
        name = "torch._tensor._rebuild_from_type_v2"
        arguments = (StorageRef("0", 4), 0, (4,), (1,), False, OrderedDict())
        call = Call(torch._tensor._rebuild_from_type_v2, torch._utils._rebuild_tensor_v2, torch.Tensor, arguments, {})
    path = write_archive(tmp_path / "rebuild.pth", {"payload": call}, FOUR_FLOATS)
    assert_refused(path, name)
    assert torch.load(path, weights_only=False)["payload"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_nested_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = save({"payload": Call(pickle.loads, pickle.dumps(exec_payload(marker)))}, tmp_path / "nested.pth")
    assert_refused(path, "pickle.loads")
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_build_on_a_tensor_is_refused(tmp_path):
    """BUILD calls Tensor.__setstate__, which may re-point the tensor or set its hooks; here it sets requires_grad."""
    tensor = rebuild(StorageRef("0", 4), state=(True, None, OrderedDict()))
    path = write_archive(tmp_path / "build.pth", {"w": tensor}, FOUR_FLOATS)
    with pytest.raises(UnsafeCheckpointError, match="BUILD"):
        read_checkpoint(path)
    assert torch.load(path, weights_only=False)["w"].requires_grad


def test_every_pickle_of_a_legacy_file_is_checked(tmp_path):
    """The small sys_info pickle before the tensors is a pickle too."""
    marker = tmp_path / "ran"
    data = save({"weight": torch.ones(2)}, tmp_path / "legacy.pth", legacy=True).read_bytes()
    stream = io.BytesIO(data)
    for _ in range(2):  # past the magic number and the protocol version
        pickletools.dis(stream, out=io.StringIO())
    sys_info_start = stream.tell()
    pickletools.dis(stream, out=io.StringIO())
    path = tmp_path / "evil.pth"
    path.write_bytes(data[:sys_info_start] + pickle.dumps(exec_payload(marker), protocol=2) + data[stream.tell() :])
    assert_refused(path, "builtins.exec")
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


REFUSED_PICKLES = {
    "NEWOBJ": b"\x80\x02ccollections\nOrderedDict\n)\x81.",
    "NEWOBJ_EX": b"\x80\x04ccollections\nOrderedDict\n)}\x92.",
    "OBJ": b"(ccollections\nOrderedDict\no.",
    "INST": b"(ibuiltins\nexec\n.",
    "EXT1": b"\x80\x02\x82\x01.",
    "REDUCE on a storage type": b"\x80\x02ctorch\nFloatStorage\n)R.",
    "BUILD on a list": b"\x80\x02]}b.",
    "BUILD of a dunder attribute": b"\x80\x02ccollections\nOrderedDict\n)R}X\t\x00\x00\x00__class__K\x01sb.",
    "SETITEM on a list": b"\x80\x02]K\x01K\x02s.",
    "APPEND to a dict": b"\x80\x02}K\x01a.",
    "persistent id of a module": b"\x80\x02X\x06\x00\x00\x00moduleK\x01\x86Q.",
}


@pytest.mark.parametrize("data_pkl", REFUSED_PICKLES.values(), ids=REFUSED_PICKLES.keys())
def test_object_building_opcodes_are_refused(tmp_path, data_pkl):
    """Refused in a file, and by the unpickler itself even on bytes the pre-scan never saw."""
    pickletools.dis(data_pkl, out=io.StringIO())  # each is a well-formed pickle
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(write_archive(tmp_path / "opcode.pth", data_pkl=data_pkl))
    with pytest.raises(UnsafeCheckpointError):
        checkpoint._RestrictedUnpickler(io.BytesIO(data_pkl), lambda pid: checkpoint._parse_storage_id(pid, False)).load()


@pytest.mark.parametrize(
    "data_pkl",
    [
        b"\x80\x02ccollections\nOrderedDict\n.",
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n.",
        b"\x80\x02ctorch\nFloatStorage\n.",
    ],
    ids=["OrderedDict", "rebuild function", "storage type"],
)
def test_a_bare_allowed_name_is_not_handed_back(tmp_path, data_pkl):
    with pytest.raises(CheckpointError, match="not only tensors and plain data"):
        read_checkpoint(write_archive(tmp_path / "bare.pth", data_pkl=data_pkl))


# ---------------------------------------------------------------------------
# Broken files.


@pytest.mark.parametrize(
    ("offset", "size", "stride"),
    [(1, (4,), (1,)), (0, (2, 3), (3, 1)), (0, (2**40,), (1,)), (2**62, (1,), (1,)), (0, (3,), (2,)), (5, (0,), (1,))],
    ids=["offset", "size", "huge-size", "huge-offset", "stride", "empty-past-end"],
)
def test_tensor_outside_its_storage_is_refused(tmp_path, offset, size, stride):
    path = write_archive(tmp_path / "outside.pth", {"w": rebuild(StorageRef("0", 4), offset, size, stride)}, FOUR_FLOATS)
    with pytest.raises(CheckpointError, match="outside its storage") as refusal:
        read_checkpoint(path)
    assert not isinstance(refusal.value, UnsafeCheckpointError)


def test_missing_storage_key_is_refused(tmp_path):
    path = write_archive(tmp_path / "missing.pth", {"w": rebuild(StorageRef("7", 4))}, FOUR_FLOATS)
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(path)


def test_storage_shorter_than_declared_is_refused(tmp_path):
    path = write_archive(tmp_path / "short.pth", {"w": rebuild(StorageRef("0", 2**40), size=(2,))}, FOUR_FLOATS)
    with pytest.raises(CheckpointError, match="holds 16 bytes"):
        read_checkpoint(path)


def test_storage_declared_as_two_types_is_refused(tmp_path):
    """torch.save refuses to write one storage as two element types; a file that does is not its work."""
    tensors = [rebuild(StorageRef("0", 4)), rebuild(StorageRef("0", 4, torch.IntStorage))]
    with pytest.raises(CheckpointError, match="declared twice"):
        read_checkpoint(write_archive(tmp_path / "twice.pth", tensors, FOUR_FLOATS))


def test_overlapping_zip_members_are_refused(tmp_path):
    """Nine directory entries pointing at one 4 KB member would read 40 KB out of a 5 KB file."""
    storages = {"0": bytes(4096)} | {str(key): b"" for key in range(1, 10)}
    tensors = [rebuild(StorageRef(str(key), 1024), size=(1024,)) for key in range(10)]
    path = write_archive(tmp_path / "overlapping.pth", tensors, storages)
    with zipfile.ZipFile(path) as archive:
        first_offset = archive.getinfo("archive/data/0").header_offset
    data = bytearray(path.read_bytes())
    for key in range(1, 10):
        entry = data.rindex(f"archive/data/{key}".encode()) - 46  # the central directory comes last
        assert data[entry : entry + 4] == b"PK\x01\x02"
        struct.pack_into("<II", data, entry + 20, 4096, 4096)  # compressed and uncompressed size
        struct.pack_into("<I", data, entry + 42, first_offset)  # where its local header is
    path.write_bytes(data)
    assert len(data) < 10 * 4096
    with pytest.raises(CheckpointError, match="overlap"):
        read_checkpoint(path)


def test_compressed_archive_is_refused(tmp_path):
    """torch.save stores members uncompressed; inflating would allocate more than the file holds."""
    source = save({"a": torch.zeros(1000)}, tmp_path / "stored.pth")
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as deflated:
        for name in original.namelist():
            deflated.writestr(name, original.read(name))
    with pytest.raises(CheckpointError, match="compressed"):
        read_checkpoint(path)


@pytest.mark.parametrize("kept", [100, 0.5, -10], ids=["head", "half", "all-but-the-end"])
def test_truncated_zip_is_refused(tmp_path, kept):
    data = save({"params_ema": small_network().state_dict()}, tmp_path / "full.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * kept) if isinstance(kept, float) else kept])
    with pytest.raises(CheckpointError, match="truncated or corrupt archive"):
        read_checkpoint(path)


@pytest.mark.parametrize("cut", [-2, -20, 200], ids=["in-the-last-storage", "in-a-count", "in-the-pickle"])
def test_truncated_legacy_file_is_refused(tmp_path, cut):
    data = save({"a": torch.ones(4), "b": torch.zeros(4)}, tmp_path / "full.pth", legacy=True).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_hand_written_legacy_file_is_read_like_torch_does(tmp_path):
    path = write_legacy(tmp_path / "crafted.pth", {"w": rebuild(StorageRef("0", 4), 1, (2,), (2,))}, {"0": (4, FOUR_FLOATS["0"])})
    assert assert_round_trip(path)["w"].tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    ("numel", "stored", "message"),
    [(2**30, (4, FOUR_FLOATS["0"]), "more than the rest of the file holds"), (4, (3, FOUR_FLOATS["0"]), "holds 3 elements")],
    ids=["declared-larger-than-the-file", "count-differs"],
)
def test_legacy_storage_sizes_are_checked(tmp_path, numel, stored, message):
    """The declared size is checked against the rest of the file before any memory is set aside."""
    path = write_legacy(tmp_path / "sizes.pth", {"w": rebuild(StorageRef("0", numel), size=(2,))}, {"0": stored})
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "sys_info",
    [b"\x80\x04\x8d" + (2**60).to_bytes(8, "little") + b"abc.", b"\x80\x04\x95" + (2**60).to_bytes(8, "little") + b"}."],
    ids=["string", "frame"],
)
def test_length_fields_larger_than_the_file_allocate_nothing(tmp_path, sys_info):
    """A 2**60-byte string or frame in a legacy file's pickle: refused, where a plain file read would try to allocate it."""
    path = tmp_path / "lengths.pth"
    path.write_bytes(
        pickle.dumps(checkpoint.LEGACY_MAGIC, protocol=2) + pickle.dumps(checkpoint.LEGACY_PROTOCOL, protocol=2) + sys_info
    )
    with pytest.raises(CheckpointError, match="corrupt pickle"):
        read_checkpoint(path)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_checkpoint(path)


def test_other_files_are_refused(tmp_path):
    tar_path = tmp_path / "old.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(save({"a": torch.ones(1)}, tmp_path / "member.pth"), arcname="pickle")
    with pytest.raises(CheckpointError, match="tar"):
        read_checkpoint(tar_path)
    for name, data in {
        "empty": b"",
        "text": b"hello, world\n",
        "safetensors-like": b"\x10\x00\x00\x00\x00\x00\x00\x00{}",
    }.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
            read_checkpoint(tmp_path / name)
