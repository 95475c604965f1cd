"""Where PyTorch differs between the hosts' versions: each helper, on whichever side this environment's torch is."""

from __future__ import annotations

import torch

from lib_codeformer.compat import autocast_enabled, autocast_supports


def test_autocast_enabled_on_the_cpu_on_this_torch():
    """torch < 2.4 has no is_autocast_enabled(device): every CPU restore failed on AUTOMATIC1111's 2.1.2."""
    assert autocast_enabled("cpu") is False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_enabled("cpu") is True
        assert autocast_enabled("cuda") is False
    assert autocast_enabled("cpu") is False


def test_autocast_supports_what_this_torch_can_run():
    assert autocast_supports("cpu", torch.bfloat16)
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    assert autocast_supports("cpu", torch.float16) is ((major, minor) >= (2, 3))  # CPU fp16 autocast came with 2.3


def test_restoring_on_the_cpu_with_the_kernel_works_on_this_torch(small_restorer, astronaut, fast_conv_calls):
    """The case #10 reported: on torch 2.1.2 every face came back 'restoration failed: torch.is_autocast_enabled()
    takes no arguments'."""
    result = small_restorer.restore(astronaut)
    assert result.restored_count == 1 and result.faces[0].reason is None
    assert fast_conv_calls  # the Winograd path, where the failing call was
