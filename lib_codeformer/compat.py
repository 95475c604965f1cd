"""Where PyTorch's API differs between the versions the hosts install, one small helper per difference.

The floor is AUTOMATIC1111 1.10's torch 2.1.2 (Forge f2.0.1: 2.3.1; SD.Next and
the command line: the newest). Each helper is tested on every one of them.
"""

from __future__ import annotations

import warnings

import torch


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ("cpu", "cuda", ...).

    ``torch.is_autocast_enabled(device_type)`` exists from torch 2.4 on; before,
    the CPU had its own function and the plain one meant CUDA.
    """
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())


def autocast_supports(device_type: str, dtype: torch.dtype) -> bool:
    """Whether autocast to ``dtype`` works on ``device_type`` (torch < 2.3 autocasts the CPU to bfloat16 only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.1 warns, disables itself, then raises on entry
        try:
            with torch.autocast(device_type=device_type, dtype=dtype):
                pass
        except RuntimeError:
            return False
    return True
