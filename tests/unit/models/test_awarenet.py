"""AwareNet: shapes for any slice count and in-plane size, attention invariants, the shift, init, and learning."""

import math

import pytest
import torch

from brainlearn.errors import BrainlearnError
from brainlearn.models.awarenet import AwareNet, AwareNetOutput, local_attention_volume, temporal_shift


@pytest.fixture(scope="module")
def model() -> AwareNet:
    torch.manual_seed(0)
    return AwareNet(1, 2)


@pytest.mark.parametrize(("shape", "feature_plane"), [((1, 1, 40, 48, 24), (5, 6)), ((2, 1, 32, 32, 7), (4, 4))])
def test_output_shapes(model, shape, feature_plane):
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert isinstance(out, AwareNetOutput)
    b, z = shape[0], shape[-1]
    assert out.logits.shape == (b, 2)
    assert out.slice_attention.shape == (b, z)
    assert out.local_attention.shape == (b, z, *feature_plane)
    assert torch.isfinite(out.logits).all()


def test_channels_classes_and_odd_sizes():
    net = AwareNet(2, 3, dropout=0.0)
    with torch.no_grad():
        out = net(torch.randn(2, 2, 33, 37, 3))
    assert out.logits.shape == (2, 3)
    assert out.local_attention.shape[:2] == (2, 3)


def test_attention_invariants(model):
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 40, 9))
    assert (out.slice_attention >= 0).all()
    torch.testing.assert_close(out.slice_attention.sum(dim=1), torch.ones(2))
    assert out.local_attention.min() >= 0 and out.local_attention.max() <= 1
    volume = local_attention_volume(out, (32, 40, 9))
    assert volume.shape == (2, 32, 40, 9)
    assert torch.isfinite(volume).all() and volume.min() >= 0 and volume.max() <= 1


def test_local_attention_volume_rejects_a_2d_shape(model):
    out = AwareNetOutput(torch.zeros(1, 2), torch.ones(1, 3) / 3, torch.zeros(1, 3, 4, 4))
    with pytest.raises(BrainlearnError, match=r"expected a spatial shape \(X, Y, Z\), got \(32, 32\)"):
        local_attention_volume(out, (32, 32))


def test_temporal_shift_moves_one_eighth_each_way():
    slices, channels = 4, 16
    s = torch.arange(slices).view(1, slices, 1, 1, 1)
    c = torch.arange(channels).view(1, 1, channels, 1, 1)
    x = (100 * (s + 1) + c).float().expand(1, slices, channels, 2, 3)  # value encodes slice and channel
    out = temporal_shift(x)
    assert out.shape == x.shape
    for z in range(slices):
        for k in range(channels):
            got = out[0, z, k]
            if k < 2:  # forward: from slice z - 1
                expected = 0.0 if z == 0 else 100 * z + k
            elif k < 4:  # backward: from slice z + 1
                expected = 0.0 if z == slices - 1 else 100 * (z + 2) + k
            else:
                expected = 100 * (z + 1) + k
            assert torch.all(got == expected), (z, k)


def test_gradients_reach_the_first_conv():
    torch.manual_seed(2)
    net = AwareNet(1, 2)
    out = net(torch.randn(2, 1, 32, 32, 5))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    for param in (net.stem[0].weight, net.attention.local.weight, net.attention.key.weight, net.attention.query.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_kaiming_initialization(model):
    conv = model.layer4[1].conv1  # 512 → 512, 3×3
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    bn = model.layer4[1].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_bad_input_says_what_was_expected(model):
    with pytest.raises(BrainlearnError, match=r"expected a batch \(B, 1, X, Y, Z\), got shape \(1, 32, 32, 8\)"):
        model(torch.randn(1, 32, 32, 8))
    with pytest.raises(BrainlearnError, match="dropout must be in"):
        AwareNet(dropout=1.5)


def test_training_loss_falls_on_a_bright_blob():
    # 8 volumes, 4 slices each, 6 Adam steps at the paper's settings: enough for the loss to fall, fast on a CPU.
    torch.manual_seed(3)
    images = torch.randn(8, 1, 32, 32, 4) * 0.1
    labels = torch.tensor([0, 1] * 4)
    images[labels == 1, :, 12:20, 10:18, 1:3] += 2.0  # class 1: a bright blob
    net = AwareNet(1, 2, dropout=0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=True)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(net(images).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert max(losses[-2:]) < 0.25 * losses[0], losses
