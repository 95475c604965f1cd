"""Writing files so that no reader ever sees half of one: a temporary name in the target's folder, then a rename."""

from __future__ import annotations

import os
from pathlib import Path


def move_into_place(temporary: Path, target: Path) -> None:
    """Rename a finished temporary file onto ``target``, with the permissions a new file would get.

    ``mkstemp`` makes files private to their owner; model folders and output
    folders are often shared.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(temporary, 0o666 & ~mask)
    os.replace(temporary, target)
