"""Helpers that test modules import by name (``from support import ...``).

They live here, not in ``conftest.py``: with several ``conftest.py`` files
(``tests/distributed`` has its own), ``import conftest`` may find another one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


class IdentityNetwork(torch.nn.Module):
    """Stands in for CodeFormer where a test is about geometry: returns its input, records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batch_sizes: list[int] = []

    def forward(self, x, w=0.0, adain=False, **_):
        self.batch_sizes.append(x.shape[0])
        return x.clone(), None, None


def require_winograd() -> None:
    """Skip where no C compiler can build the kernel; fail instead where CI requires it."""
    from lib_codeformer.acceleration import winograd

    if not winograd.available():
        if os.environ.get("CODEFORMER_REQUIRE_FAST_CONV"):
            pytest.fail("the Winograd kernel is required here (CODEFORMER_REQUIRE_FAST_CONV is set) but is not available")
        pytest.skip("no C compiler here: the fast convolutions cannot be built")


def kernel_block() -> int:
    """The output channels the kernel's micro-kernel takes at a time (16 on AVX2, 64 on AVX-512): layers' sizes in tests."""
    from lib_codeformer.acceleration import kernel_build

    return kernel_build.kernel().out_channel_multiple
