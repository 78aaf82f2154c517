"""Backbones: the (B, C, X, Y, Z) → (B, F) contract for every registered name, options, init and the head."""

import math

import pytest
import torch
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.models.backbones import BACKBONES, LinearHead, create_backbone, init_kaiming

VOLUME = (2, 1, 32, 40, 24)  # non-cubic, tiny


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_forward_features_shape(name):
    torch.manual_seed(0)
    backbone = create_backbone(name, in_channels=1).eval()
    x = torch.randn(VOLUME)
    with torch.no_grad():
        features = backbone.forward_features(x)
        again = backbone(x)
    assert features.shape == (2, backbone.num_features)
    assert torch.isfinite(features).all()
    torch.testing.assert_close(features, again)


@pytest.mark.parametrize(
    ("name", "kwargs", "num_features"),
    [
        ("resnet3d", {"widen_factor": 0.25}, 128),
        ("densenet3d", {"init_features": 8, "growth_rate": 4, "block_config": (2, 2)}, 16),
        ("sfcn", {"channels": (4, 8, 8, 8, 8, 6)}, 6),
    ],
)
def test_narrow_options_and_two_channels(name, kwargs, num_features):
    backbone = create_backbone(name, in_channels=2, **kwargs)
    features = backbone(torch.randn(2, 2, 32, 40, 24))
    assert backbone.num_features == num_features
    assert features.shape == (2, num_features)
    features.sum().backward()  # gradients flow in training mode


def test_resnet50_slices_uses_the_central_slices():
    torch.manual_seed(0)
    backbone = create_backbone("resnet50_slices", in_channels=1, slices=4).eval()
    x = torch.randn(1, 1, 32, 32, 10)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), backbone(x[..., 3:7]))
        assert backbone(x[..., :3]).shape == (1, 2048)  # fewer slices than asked: all of them


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(BrainlearnError, match=r"Unknown backbone 'resnet3' \(did you mean 'resnet3d'\?\)"):
        create_backbone("resnet3", in_channels=1)


def test_unknown_option_suggests_the_nearest():
    with pytest.raises(BrainlearnError, match=r"has no option 'widen' \(did you mean 'widen_factor'\?\)"):
        create_backbone("resnet3d", in_channels=1, widen=2)


def test_bad_values_say_what_was_expected():
    with pytest.raises(BrainlearnError, match="in_channels must be at least 1, got 0"):
        create_backbone("sfcn", in_channels=0)
    with pytest.raises(BrainlearnError, match="channels must list at least two positive widths"):
        create_backbone("sfcn", in_channels=1, channels=(8,))
    with pytest.raises(BrainlearnError, match="slices must be a positive number or None, got 0"):
        create_backbone("resnet50_slices", in_channels=1, slices=0)


def test_init_kaiming_uses_fan_out():
    net = nn.Sequential(nn.Conv3d(4, 64, 3), nn.BatchNorm3d(64), nn.Linear(200, 300))
    nn.init.constant_(net[1].weight, 3.0)
    nn.init.constant_(net[1].bias, 3.0)
    assert init_kaiming(net) is net
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 27)), rel=0.05)
    assert net[2].weight.std().item() == pytest.approx(math.sqrt(2 / 300), rel=0.05)
    assert torch.all(net[0].bias == 0) and torch.all(net[2].bias == 0)
    assert torch.all(net[1].weight == 1) and torch.all(net[1].bias == 0)


def test_linear_head():
    head = LinearHead(16, 3, dropout=0.2)
    assert head(torch.randn(5, 16)).shape == (5, 3)
    with pytest.raises(BrainlearnError, match=r"dropout must be in \[0, 1\), got 1.0"):
        LinearHead(16, 3, dropout=1.0)
