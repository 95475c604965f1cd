"""Fixtures the kernel's tests share."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def threads(request):
    """PyTorch's thread count (which the kernel's calls use) set to the parameter for one test, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
