"""Writing files so that no reader ever sees half of one: a temporary name in the target's folder, then a rename.

Every file the project writes goes this way: images, videos, downloaded
weights, converted weights, the compiled kernel's folder (``atomic_output``).
Temporaries (files, or folders) are named ``.<target name>.codeformer-<pid>-<random>.part``:
hidden, recognisably ours, and carrying the id of the process that owns the
write, so that a later run can remove those a killed process left behind
(``remove_stale``) without touching a temporary file another live run is
still writing. Workers of a run on a cluster name their temporaries for the
run's driver (``owner``): no node can tell whether another node's process is
alive, but the driver knows when all of its writers have finished
(``remove_owned``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_MARK = "codeformer"
_TEMPORARY = re.compile(rf"^\..+\.{_MARK}-(\d+)-[^.]+\.part$")
# A temporary file this old is a leftover whoever wrote it (a write takes seconds; pids get reused).
STALE_SECONDS = 24 * 3600


def move_into_place(temporary: Path, target: Path) -> None:
    """Rename a finished temporary file onto ``target``, with the permissions a new file would get.

    ``mkstemp`` makes files private to their owner; model folders and output
    folders are often shared.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(temporary, 0o666 & ~mask)
    os.replace(temporary, target)


def temporary_file(target: Path, owner: int | None = None) -> Path:
    """A new, empty temporary file next to ``target`` (created, so the name is ours), named for ``owner``
    (a process id; this process unless given)."""
    pid = os.getpid() if owner is None else owner
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.{_MARK}-{pid}-", suffix=".part", dir=target.parent)
    os.close(handle)
    return Path(name)


def temporary_folder(target: Path, owner: int | None = None) -> Path:
    """A new, empty temporary folder next to ``target``, named as temporary files are."""
    pid = os.getpid() if owner is None else owner
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{_MARK}-{pid}-", suffix=".part", dir=target.parent))


@contextmanager
def atomic_output(target: Path, owner: int | None = None, *, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or folder) next to ``target`` to write; renamed onto ``target`` when the block ends
    without an error, removed when it raises or is interrupted. A killed process leaves it for ``remove_stale``.

    A folder is renamed only where ``target`` does not exist yet (``FileExistsError`` or another ``OSError``
    otherwise, after the temporary folder is removed): two processes publishing one folder keep the first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_folder(target, owner) if folder else temporary_file(target, owner)
    try:
        yield temporary
        if folder:
            os.rename(temporary, target)
        else:
            move_into_place(temporary, target)
    except BaseException:
        _remove(temporary)
        raise


def atomic_write_bytes(target: Path, data: bytes, owner: int | None = None) -> None:
    """Write ``data`` to ``target`` through a temporary file; on any failure or interruption nothing is left."""
    with atomic_output(target, owner) as temporary:
        temporary.write_bytes(data)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_temporary(path: Path) -> bool:
    return _TEMPORARY.match(path.name) is not None


def remove_stale(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Remove temporaries of ours (files and folders) that no live process is writing (left by a killed run);
    returns them."""
    removed = []
    for path in _temporaries(folder, recursive):
        match = _TEMPORARY.match(path.name)
        try:
            pid = int(match.group(1)) if match else -1
            old = time.time() - path.stat().st_mtime > STALE_SECONDS
            if old or not process_alive(pid):
                _remove(path)
                removed.append(path)
        except OSError:
            continue
    return removed


def remove_owned(folder: Path, owner: int) -> list[Path]:
    """Remove the temporary files named for ``owner`` once every writer of its run has finished: what is left was
    being written by a worker that died with its node. Returns them."""
    removed = []
    for path in _temporaries(folder, recursive=True):
        match = _TEMPORARY.match(path.name)
        if match and int(match.group(1)) == owner:
            _remove(path)
            removed.append(path)
    return removed


def _temporaries(folder: Path, recursive: bool) -> Iterator[Path]:
    if not folder.is_dir():
        return
    pattern = f"**/.*.{_MARK}-*.part" if recursive else f".*.{_MARK}-*.part"
    found = sorted(path for path in folder.glob(pattern) if is_temporary(path))
    # A temporary folder's own contents are not looked at again.
    yield from (path for path in found if not any(is_temporary(parent) for parent in path.parents))


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True
