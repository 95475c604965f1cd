"""Reading PyTorch checkpoint files without ever running code stored in them.

A ``.pth``/``.ckpt`` file is a pickle, and a pickle is a program: unpickling
may import and call anything. ``torch.load(weights_only=True)`` restricts that,
but torch < 2.6 has public bypasses (CVE-2025-32434) and WebUI hosts pin old
torch versions. So this module does not call ``torch.load`` at all: it reads
both ``torch.save`` formats itself, with its own unpickler.

The unpickler knows a handful of names (``collections.OrderedDict``, the
tensor rebuild functions, the typed storage classes) and maps each to a
function of this module, never to torch's. Before a single opcode runs, a
pre-scan of the pickle (``pickletools``, which executes nothing) lists every
name it would import; any name outside the list refuses the whole file. The
unpickler's own opcode table is restricted too (``BUILD`` only on a state
dict's metadata, no ``INST``/``OBJ``/``NEWOBJ``/``EXT``), so it stays safe
even on bytes the pre-scan did not see. Storage bytes are read straight from
the file into the memory the tensors use, and never more than the file holds.

This module imports nothing else from ``lib_codeformer``: it is a leaf that
the weights loader (and anything else) can build on.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import reprlib
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import torch

__all__ = ["CheckpointError", "UnsafeCheckpointError", "read_checkpoint"]


class CheckpointError(ValueError):
    """The file is not a usable checkpoint of tensors; the message says what is wrong with it."""


class UnsafeCheckpointError(CheckpointError):
    """The file tries to import or run something a checkpoint of tensors never needs.

    Nothing in the file was run. ``globals`` lists the refused dotted names (empty when the
    refusal is about an opcode or a persistent id rather than an imported name), so a caller
    can word it as a security refusal.
    """

    def __init__(self, message: str, refused_globals: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.globals: list[str] = list(refused_globals)


# The legacy format (``_use_new_zipfile_serialization=False``) starts with these two pickled numbers.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# Storage keys are decimal numbers in both formats; anything else is not written by torch.
_STORAGE_KEY = re.compile(r"\w{1,64}", re.ASCII)
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")
_ZIP_LOCAL_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class _StorageType:
    """What a pickled ``torch.FloatStorage``-style name means here: only the element type of a storage."""

    name: str
    dtype: torch.dtype
    itemsize: int


@dataclass(frozen=True, eq=False)
class _Storage:
    """One storage of the archive, as a 1-D tensor of its declared type and length; tensors are views into it."""

    key: str
    elements: torch.Tensor


def _storage_type(name: str, dtype: torch.dtype) -> _StorageType:
    return _StorageType(name, dtype, torch.empty((), dtype=dtype).element_size())


_STORAGE_TYPES = {
    f"torch.{storage.name}": storage
    for storage in (
        _storage_type("FloatStorage", torch.float32),
        _storage_type("DoubleStorage", torch.float64),
        _storage_type("HalfStorage", torch.float16),
        _storage_type("BFloat16Storage", torch.bfloat16),
        _storage_type("LongStorage", torch.int64),
        _storage_type("IntStorage", torch.int32),
        _storage_type("ShortStorage", torch.int16),
        _storage_type("CharStorage", torch.int8),
        _storage_type("ByteStorage", torch.uint8),
        _storage_type("BoolStorage", torch.bool),
        _storage_type("ComplexFloatStorage", torch.complex64),
        _storage_type("ComplexDoubleStorage", torch.complex128),
    )
}


# ---------------------------------------------------------------------------
# The safe stand-ins for the names a checkpoint's pickle may import.


def _new_ordered_dict(*args: object) -> OrderedDict:
    """``collections.OrderedDict()``: pickles always build it empty and fill it with SETITEMS."""
    if args:
        raise CheckpointError(f"the pickle builds an OrderedDict from {reprlib.repr(args)}; torch.save builds it empty")
    return OrderedDict()


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    metadata: object = None,
) -> torch.Tensor:
    """What ``torch.save`` writes for every plain tensor: a strided view of one storage.

    ``requires_grad`` is checked but not applied: a checkpoint carries data, and the tensors
    come back as plain tensors that autograd does not track.
    """
    if type(requires_grad) is not bool:
        raise CheckpointError(f"a tensor's requires_grad is {reprlib.repr(requires_grad)}, not a bool")
    _check_no_hooks(backward_hooks)
    if metadata is not None and not (type(metadata) is dict and not metadata):
        raise CheckpointError(f"a tensor carries metadata {reprlib.repr(metadata)} (conjugate or negative bits); not supported")
    return _strided_view(storage, storage_offset, size, stride)


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> torch.Tensor:
    """The older rebuild function (no requires_grad, no hooks), found in files of old torch versions."""
    return _strided_view(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> torch.Tensor:
    """``nn.Parameter`` as a plain tensor: its data is all a checkpoint needs."""
    if type(data) is not torch.Tensor:
        raise CheckpointError(f"a parameter wraps {type(data).__name__}, not a tensor")
    if type(requires_grad) is not bool:
        raise CheckpointError(f"a parameter's requires_grad is {reprlib.repr(requires_grad)}, not a bool")
    _check_no_hooks(backward_hooks)
    return data


def _check_no_hooks(backward_hooks: object) -> None:
    """Backward hooks are functions; ``torch.save`` always writes an empty OrderedDict."""
    if type(backward_hooks) not in (OrderedDict, dict) or backward_hooks:
        raise UnsafeCheckpointError(f"refused: a tensor carries backward hooks {reprlib.repr(backward_hooks)}")


def _index_tuple(value: object, what: str) -> tuple[int, ...]:
    if type(value) not in (tuple, list) or any(type(item) is not int or not 0 <= item < 2**63 for item in value):
        raise CheckpointError(f"a tensor's {what} is {reprlib.repr(value)}, not a tuple of non-negative integers")
    return tuple(value)


def _strided_view(storage: object, storage_offset: object, size: object, stride: object) -> torch.Tensor:
    """The tensor ``torch.as_strided`` makes of the storage, once every element it reaches is known to lie inside it."""
    if type(storage) is not _Storage:
        raise CheckpointError(f"a tensor is built on {type(storage).__name__}, not on a storage of the file")
    shape = _index_tuple(size, "size")
    strides = _index_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"a tensor has size {shape} but stride {strides}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise CheckpointError(f"a tensor's storage offset is {reprlib.repr(storage_offset)}, not a non-negative integer")
    available = storage.elements.numel()
    if 0 in shape:
        needed = storage_offset
    else:
        needed = storage_offset + 1 + sum((length - 1) * step for length, step in zip(shape, strides, strict=True))
    if needed > available:
        raise CheckpointError(
            f"tensor storage offset/size lies outside its storage: offset {storage_offset}, size {shape}, stride {strides} "
            f"reach {needed} elements of storage {storage.key}, which holds {available}"
        )
    try:
        return torch.as_strided(storage.elements, shape, strides, storage_offset)
    except RuntimeError as error:
        raise CheckpointError(f"a tensor of size {shape} cannot be made: {error}") from None


# Each name a checkpoint of tensors imports, mapped to this module's stand-in. Nothing else is ever imported.
_ALLOWED_GLOBALS: dict[str, object] = {
    "collections.OrderedDict": _new_ordered_dict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    **_STORAGE_TYPES,
}
_CALLABLES = (_new_ordered_dict, _rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter)


# ---------------------------------------------------------------------------
# Pickles are read from memory (zip) or from the file itself (legacy).


class _ClampedReader:
    """A file whose reads never ask for more than it still holds.

    A pickle's length fields (a 2**60-byte string, a frame) would otherwise make the file
    object allocate that much before finding out the bytes are not there. (The unpickler
    itself reads from memory: see ``_unpickle``.)
    """

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self.tell = file.tell
        self.seek = file.seek
        self.readline = file.readline
        self.readinto = file.readinto

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(self._size - self._file.tell(), 0)
        return self._file.read(remaining if size is None or size < 0 else min(size, remaining))


# Where pickles are pre-scanned from; neither reads more than is there.
_PickleSource = io.BytesIO | _ClampedReader


# ---------------------------------------------------------------------------
# The pre-scan: every imported name, found without running anything.

# Opcodes that build objects of arbitrary classes or fetch names from registries; a checkpoint needs none.
_REFUSED_OPCODES = frozenset({"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"})
_TEXT_OPCODES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_MEMO_STORES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_LOADS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_UNKNOWN = object()
# What a checkpoint may hand back: these values, in these containers.
_PLAIN_LEAVES = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray, torch.Tensor})
_CONTAINERS = frozenset({dict, OrderedDict, list, tuple, set, frozenset})


def _refused_globals(names: list[str]) -> UnsafeCheckpointError:
    which = "which is not a tensor or container" if len(names) == 1 else "which are not tensors or containers"
    return UnsafeCheckpointError(f"refused: the pickle imports {', '.join(names)}, {which}; nothing in the file was run", names)


def _refused_opcode(name: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refused: the pickle uses the {name} opcode, which builds arbitrary objects; nothing in the file was run"
    )


def _python3_name(module: str, name: str, protocol: int) -> str:
    """The dotted name Python 3's unpickler would import: protocol 0-2 pickles say ``__builtin__.exec`` for ``builtins.exec``."""
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _imported_names(opcodes: Iterable[tuple[pickletools.OpcodeInfo, Any, int | None]]) -> list[str]:
    """The dotted names a pickle imports, in order, found by following its stack the way the unpickler would.

    Only text values are tracked (``STACK_GLOBAL`` takes its names from the stack, often through
    the memo); everything else is an opaque placeholder. A name that is not plain text on the
    stack is reported as such, and refused.
    """
    stack: list[object] = []
    marks: list[list[object]] = []
    memo: dict[int, object] = {}
    names: list[str] = []
    protocol = 0
    for opcode, argument, _ in opcodes:
        name = opcode.name
        if name in _REFUSED_OPCODES:
            if name == "INST":
                raise _refused_globals([_python3_name(*argument.split(" ", 1), protocol)])
            raise _refused_opcode(name)
        if name == "PROTO":
            protocol = argument
        if name in _MEMO_STORES:
            memo[len(memo) if name == "MEMOIZE" else argument] = stack[-1]
            continue
        if name in _MEMO_LOADS:
            stack.append(memo[argument])
            continue
        if name == "MARK":
            marks.append(stack)
            stack = []
            continue
        if name == "DUP":
            stack.append(stack[-1])
            continue
        if name == "GLOBAL":
            names.append(_python3_name(*argument.split(" ", 1), protocol))
        elif name == "STACK_GLOBAL":
            module, qualified_name = stack[-2], stack[-1]
            is_text = type(module) is str and type(qualified_name) is str
            names.append(_python3_name(module, qualified_name, protocol) if is_text else "<a name computed while unpickling>")
        if pickletools.markobject in opcode.stack_before:
            stack = marks.pop()
            below_mark = opcode.stack_before.index(pickletools.markobject)
        elif name == "POP" and not stack:
            stack = marks.pop()
            below_mark = 0
        else:
            below_mark = len(opcode.stack_before)
        if below_mark > len(stack):
            raise IndexError(f"{name} finds too few values on the stack")
        del stack[len(stack) - below_mark :]
        stack.extend([argument] if name in _TEXT_OPCODES else [_UNKNOWN] * len(opcode.stack_after))
    return names


def _check_imports(file: _PickleSource) -> None:
    """Refuse the pickle at the file's position if it imports any name outside the allowlist; leaves the file after it."""
    try:
        names = _imported_names(pickletools.genops(file))
    except CheckpointError:
        raise
    except (ValueError, KeyError, IndexError, EOFError, struct.error, UnicodeDecodeError) as error:
        raise CheckpointError(f"truncated or corrupt pickle ({error})") from None
    refused = [name for name in dict.fromkeys(names) if name not in _ALLOWED_GLOBALS]
    if refused:
        raise _refused_globals(refused)


# ---------------------------------------------------------------------------
# The unpickler.


def _opcode_byte(name: str) -> int:
    return next(opcode.code for opcode in pickletools.opcodes if opcode.name == name).encode("latin-1")[0]


def _refusal(name: str) -> Callable[[pickle._Unpickler], None]:
    def refuse(_: pickle._Unpickler) -> None:
        raise _refused_opcode(name)

    return refuse


def _first_foreign(root: object) -> object | None:
    """The first object in ``root`` that is neither plain data nor a tensor (None if there is none).

    What a checkpoint may hand back: None, bools, numbers, text, bytes and tensors in dicts,
    OrderedDicts, lists, tuples and sets. Anything else (a bare storage, a stand-in function)
    means the pickle was not made by ``torch.save`` of tensors.
    """
    pending = [root]
    seen: set[int] = set()
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in _PLAIN_LEAVES:
            continue
        if kind not in _CONTAINERS:
            return item
        if id(item) in seen:
            continue
        seen.add(id(item))
        if kind in (dict, OrderedDict):
            pending.extend(item.keys())
            pending.extend(item.values())
        else:
            pending.extend(item)
    return None


class _RestrictedUnpickler(pickle._Unpickler):
    """Python's pure-Python unpickler with its dangerous opcodes restricted.

    The C unpickler cannot restrict ``BUILD`` (which calls ``__setstate__`` or sets attributes
    on any object), so this one has its own dispatch table: names come only from the
    allowlist, ``REDUCE`` calls only this module's stand-ins, ``BUILD`` only sets plain
    attributes (a state dict's ``_metadata``) on an OrderedDict, and the container opcodes
    only fill real containers.
    """

    dispatch: ClassVar[dict[int, Callable[[pickle._Unpickler], None]]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BytesIO, storages: Callable[[object], _Storage] | None) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> object:
        dotted = _python3_name(module, name, self.proto)
        if dotted not in _ALLOWED_GLOBALS:
            raise _refused_globals([dotted])
        return _ALLOWED_GLOBALS[dotted]

    def persistent_load(self, pid: object) -> _Storage:
        if self._storages is None:
            raise UnsafeCheckpointError(f"refused: a persistent id {reprlib.repr(pid)} where the file holds no tensors")
        return self._storages(pid)

    def _load_reduce(self) -> None:
        arguments = self.stack.pop()
        function = self.stack[-1]
        if not any(function is allowed for allowed in _CALLABLES):
            raise UnsafeCheckpointError(
                f"refused: the pickle calls a {type(function).__name__}, which is not a tensor rebuild function"
            )
        if type(arguments) is not tuple:
            raise CheckpointError(f"the pickle calls a function with {type(arguments).__name__} as its arguments")
        self.stack[-1] = function(*arguments)

    def _load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is not OrderedDict:
            raise UnsafeCheckpointError(f"refused: the pickle sets the state of a {type(target).__name__} (BUILD)")
        if (
            type(state) is not dict
            or any(type(key) is not str or key.startswith("__") for key in state)
            or _first_foreign(state) is not None
        ):
            raise UnsafeCheckpointError(f"refused: the pickle sets {reprlib.repr(state)} as the attributes of an OrderedDict")
        vars(target).update(state)

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._container(list).append(value)

    def _load_appends(self) -> None:
        values = self.pop_mark()
        self._container(list).extend(values)

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._container(dict, OrderedDict)[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._container(dict, OrderedDict)
        for index in range(0, len(items), 2):
            target[items[index]] = items[index + 1]

    def _load_additems(self) -> None:
        values = self.pop_mark()
        self._container(set).update(values)

    def _container(self, *kinds: type) -> Any:
        """The object the container opcodes fill: a real list, dict or set, never a tensor or anything with its own methods."""
        target = self.stack[-1]
        if type(target) not in kinds:
            raise UnsafeCheckpointError(f"refused: the pickle adds items to a {type(target).__name__}")
        return target

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.APPEND[0]] = _load_append
    dispatch[pickle.APPENDS[0]] = _load_appends
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch.update({_opcode_byte(name): _refusal(name) for name in _REFUSED_OPCODES})


def _unpickle(file: _PickleSource, storages: Callable[[object], _Storage] | None = None) -> Any:
    """The object pickled at the file's position: pre-scanned, then loaded from memory with the restricted unpickler.

    The pre-scan finds where the pickle ends, so the unpickler reads only those bytes and leaves
    the file after them.
    """
    start = file.tell()
    _check_imports(file)
    length = file.tell() - start
    file.seek(start)
    pickled = io.BytesIO(file.read(length))
    try:
        return _RestrictedUnpickler(pickled, storages).load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
        struct.error,
        UnicodeDecodeError,
        OverflowError,
        RecursionError,
    ) as error:
        raise CheckpointError(f"corrupt pickle ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------------------
# Storages: parsed persistent ids, bytes read once per key.


def _parse_storage_id(pid: object, legacy: bool) -> tuple[_StorageType, str, int]:
    """``('storage', storage_type, key, location, numel)``, plus a ``view_metadata`` in legacy files.

    The location (``cpu``, ``cuda:0``...) is checked but ignored: everything loads to the CPU.
    """
    length = 6 if legacy else 5
    if type(pid) is not tuple or len(pid) != length or type(pid[0]) is not str or pid[0] != "storage":
        raise UnsafeCheckpointError(f"refused: a persistent id {reprlib.repr(pid)} that is not a tensor storage")
    storage_type, key, location, numel = pid[1:5]
    if type(storage_type) is not _StorageType:
        raise CheckpointError(f"a storage of type {reprlib.repr(storage_type)}, not a known tensor storage")
    if type(key) is not str or not _STORAGE_KEY.fullmatch(key):
        raise CheckpointError(f"a storage key {reprlib.repr(key)} that torch does not write")
    if type(location) is not str or type(numel) is not int or numel < 0:
        raise CheckpointError(f"a storage id with location {reprlib.repr(location)} and size {reprlib.repr(numel)}")
    if legacy and pid[5] is not None:
        raise CheckpointError(
            "a storage view, which only very old torch versions wrote; re-save the checkpoint with a newer torch"
        )
    return storage_type, key, numel


def _swap_byte_order(raw: torch.Tensor, storage_type: _StorageType) -> None:
    """Reverse the bytes of each number in place: for archives written on big-endian machines."""
    width = storage_type.itemsize // 2 if storage_type.dtype.is_complex else storage_type.itemsize
    if width > 1:
        groups = raw.view(-1, width)
        groups.copy_(groups.flip(1))


def _tensor_over(buffer: bytearray) -> torch.Tensor:
    """A uint8 tensor sharing the buffer's memory (``frombuffer`` refuses an empty buffer)."""
    return torch.frombuffer(buffer, dtype=torch.uint8) if buffer else torch.empty(0, dtype=torch.uint8)


class _Storages:
    """The ``persistent_load`` of one archive: each key's bytes are fetched once and shared by all its tensors."""

    def __init__(self, fetch: Callable[[str, int], bytearray], *, legacy: bool, big_endian: bool = False) -> None:
        self._fetch = fetch
        self._legacy = legacy
        self._big_endian = big_endian
        self.loaded: dict[str, tuple[_Storage, bytearray]] = {}

    def __call__(self, pid: object) -> _Storage:
        storage_type, key, numel = _parse_storage_id(pid, self._legacy)
        if key in self.loaded:
            storage = self.loaded[key][0]
            if storage.elements.dtype != storage_type.dtype or storage.elements.numel() != numel:
                raise CheckpointError(f"storage {key} is declared twice, with different types or sizes")
            return storage
        nbytes = numel * storage_type.itemsize
        buffer = self._fetch(key, nbytes)
        raw = _tensor_over(buffer)[:nbytes]
        if self._big_endian:
            _swap_byte_order(raw, storage_type)
        storage = _Storage(key, raw.view(storage_type.dtype))
        self.loaded[key] = (storage, buffer)
        return storage


# ---------------------------------------------------------------------------
# The zip format (torch.save's default since torch 1.6).


def _member_bytes(file: BinaryIO, archive_size: int, member: zipfile.ZipInfo) -> bytearray:
    """A member's bytes, read straight from the file: only after checking they all lie inside it.

    torch.save stores members uncompressed, so the size to allocate is what the archive
    physically holds; compressed or encrypted members are refused rather than inflated.
    """
    if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1:
        raise CheckpointError(f"{member.filename} is compressed or encrypted, which torch.save never writes")
    if not 0 <= member.header_offset <= archive_size - _ZIP_LOCAL_HEADER.size:
        raise CheckpointError(f"truncated or corrupt archive: {member.filename} lies outside the file")
    file.seek(member.header_offset)
    header = file.read(_ZIP_LOCAL_HEADER.size)
    if header[:4] != _ZIP_LOCAL_SIGNATURE:
        raise CheckpointError(f"truncated or corrupt archive: no header for {member.filename}")
    _, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(header)
    start = member.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
    if member.compress_size != member.file_size or start + member.file_size > archive_size:
        raise CheckpointError(f"truncated or corrupt archive: {member.filename} extends past the end of the file")
    buffer = bytearray(member.file_size)
    file.seek(start)
    if file.readinto(buffer) != len(buffer):
        raise CheckpointError(f"truncated or corrupt archive: {member.filename} is cut short")
    return buffer


def _read_zip(file: BinaryIO, archive_size: int) -> Any:
    try:
        members = {member.filename: member for member in zipfile.ZipFile(file).infolist()}
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error, OSError, NotImplementedError) as error:
        raise CheckpointError(f"truncated or corrupt archive ({error})") from None
    first = next(iter(members), "")
    if "/" not in first:
        raise CheckpointError("a zip archive that torch.save did not write (its members are not in one folder)")
    prefix = first.split("/", 1)[0] + "/"
    if f"{prefix}constants.pkl" in members or any(name.startswith(f"{prefix}code/") for name in members):
        raise CheckpointError("a TorchScript archive (torch.jit.save), not a checkpoint of tensors")
    if f"{prefix}data.pkl" not in members:
        raise CheckpointError(f"a zip archive without {prefix}data.pkl, not a torch.save checkpoint")
    read_so_far = 0

    def read(name: str) -> bytearray:
        """Members must not overlap: directory entries that all point at one big member would multiply it."""
        nonlocal read_so_far
        read_so_far += members[name].file_size
        if read_so_far > archive_size:
            raise CheckpointError(f"corrupt archive: its members overlap ({name} would be read from bytes already read)")
        return _member_bytes(file, archive_size, members[name])

    byte_order = "little"
    if f"{prefix}byteorder" in members:
        byte_order = bytes(read(f"{prefix}byteorder")).decode("ascii", "replace")
    if byte_order not in ("little", "big"):
        raise CheckpointError(f"an archive of unknown byte order {byte_order!r:.40}")

    def fetch(key: str, nbytes: int) -> bytearray:
        name = f"{prefix}data/{key}"
        if name not in members:
            raise CheckpointError(f"storage {name} is missing from the archive")
        buffer = read(name)
        if len(buffer) < nbytes:
            raise CheckpointError(f"storage {name} holds {len(buffer)} bytes, but the pickle declares {nbytes}")
        return buffer

    pickled = io.BytesIO(read(f"{prefix}data.pkl"))
    return _unpickle(pickled, _Storages(fetch, legacy=False, big_endian=byte_order == "big"))


# ---------------------------------------------------------------------------
# The legacy format (torch.save(..., _use_new_zipfile_serialization=False)).


def _read_legacy(file: _ClampedReader, archive_size: int) -> Any:
    """Five pickles (magic number, protocol, sys_info, the object, its storage keys), then each storage's bytes.

    Each storage is an 8-byte little-endian element count and the raw bytes, always
    little-endian: torch converts on write, so sys_info's ``little_endian`` (the writer's
    machine) does not matter for reading, as in torch's own loader.
    """
    try:
        magic = _unpickle(file)
    except UnsafeCheckpointError:
        raise
    except CheckpointError:
        raise CheckpointError("not a PyTorch checkpoint: neither a zip archive nor a legacy torch.save file") from None
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint: neither a zip archive nor a legacy torch.save file")
    protocol = _unpickle(file)
    if type(protocol) is not int or protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"a legacy checkpoint of unknown protocol {reprlib.repr(protocol)}")
    if type(_unpickle(file)) is not dict:
        raise CheckpointError("a legacy checkpoint without its sys_info dict")
    reserved = 0

    def allocate(key: str, nbytes: int) -> bytearray:
        """Storage bytes come after the pickles; more than the rest of the file cannot be there."""
        nonlocal reserved
        reserved += 8 + nbytes
        if reserved > archive_size - file.tell():
            raise CheckpointError(f"storage {key} declares {nbytes} bytes, more than the rest of the file holds")
        return bytearray(nbytes)

    storages = _Storages(allocate, legacy=True)
    result = _unpickle(file, storages)
    _fill_legacy_storages(file, _unpickle(file), storages)
    return result


def _fill_legacy_storages(file: _ClampedReader, keys: object, storages: _Storages) -> None:
    """Read each storage's bytes, in the order of the pickled key list, into the memory its tensors already view."""
    if type(keys) is not list or any(type(key) is not str for key in keys):
        raise CheckpointError(f"a legacy checkpoint whose storage key list is {reprlib.repr(keys)}")
    if len(set(keys)) != len(keys) or set(keys) != set(storages.loaded):
        missing = sorted(set(storages.loaded) - set(keys))
        raise CheckpointError(f"legacy storage keys do not match the tensors (missing: {missing[:5]}, listed: {keys[:5]})")
    for key in keys:
        storage, buffer = storages.loaded[key]
        count = file.read(8)
        if len(count) != 8:
            raise CheckpointError("truncated legacy checkpoint: the storages are cut short")
        elements = int.from_bytes(count, "little")
        if elements != storage.elements.numel():
            raise CheckpointError(f"legacy storage {key} holds {elements} elements, its tensors say {storage.elements.numel()}")
        if file.readinto(buffer) != len(buffer):
            raise CheckpointError("truncated legacy checkpoint: the storages are cut short")


# ---------------------------------------------------------------------------


def _is_tar(head: bytes) -> bool:
    return head[257:262] == b"ustar"


def read_checkpoint(path: str | os.PathLike) -> Any:
    """What ``torch.load(path, weights_only=True, map_location="cpu")`` returns for a benign file, without torch.load.

    Dicts, OrderedDicts (with a state dict's ``_metadata``), lists, tuples, numbers, text,
    None and CPU tensors. Parameters come back as plain tensors and no tensor requires grad:
    a checkpoint is data. Raises ``CheckpointError`` for a file that is not a usable
    checkpoint, its subclass ``UnsafeCheckpointError`` for one that tries to import or run
    anything else (nothing stored in the file is run), and ``OSError`` if it cannot be opened.
    """
    with open(path, "rb") as file:
        archive_size = os.fstat(file.fileno()).st_size
        head = file.read(512)
        file.seek(0)
        if head.startswith(_ZIP_LOCAL_SIGNATURE):
            result = _read_zip(file, archive_size)
        elif _is_tar(head):
            raise CheckpointError(
                "an old tar-format torch checkpoint (torch < 0.4), which is not supported; re-save it with a newer torch"
            )
        else:
            result = _read_legacy(_ClampedReader(file, archive_size), archive_size)
    foreign = _first_foreign(result)
    if foreign is not None:
        raise CheckpointError(f"the checkpoint holds a {type(foreign).__name__}, not only tensors and plain data")
    return result
