"""Batch norms folded into their convolutions: the same outputs, only recognised pairs folded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib_codeformer.acceleration.folding import fold_batch_norms, folded_parameters


def _randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator))
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(shape, generator=generator))
            module.bias.data.copy_(torch.randn(shape, generator=generator))
    return model.eval()


class Bottleneck(nn.Module):
    """torchvision's naming: ``bnN`` applied to ``convN``'s output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def test_folded_models_compute_the_same():
    torch.manual_seed(0)
    model = _randomise_norms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Bottleneck()), 1)
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        expected = model(x)
        assert fold_batch_norms(model) == 3
        folded = model(x)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_only_a_norm_right_after_its_convolution_is_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(4))
    assert fold_batch_norms(model.eval()) == 0  # a ReLU between them; a norm of another width
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) == 2


def test_folding_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_folded_parameters_exact_numbers():
    conv = nn.Conv2d(1, 2, 1, bias=True)
    norm = nn.BatchNorm2d(2, eps=0.0).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 3.0]))
        norm.running_mean.copy_(torch.tensor([1.0, 1.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25]))
        norm.weight.copy_(torch.tensor([1.0, 2.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0]))
    weight, bias = folded_parameters(conv, norm)
    # channel 0: (2x + 1 - 1) / 2 * 1 + 0.5 = x + 0.5; channel 1: (-x + 3 - 1) / 0.5 * 2 = -4x + 8
    assert weight.flatten().tolist() == [1.0, -4.0]
    assert bias.tolist() == [0.5, 8.0]
    assert folded_parameters(nn.Conv2d(1, 2, 1, bias=False), None)[1].tolist() == [0.0, 0.0]
