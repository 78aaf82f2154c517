"""ShareSynNet and its discriminator: shapes, the AdaIN direction switch, initialization, input checks."""

import pytest
import torch

from brainlearn.errors import BrainlearnError
from brainlearn.models.sharesynnet import (
    MRI_TO_PET,
    PET_TO_MRI,
    AdaIN,
    CosineSelfAttention,
    ShareDiscriminator,
    ShareSynNet,
)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return ShareSynNet(width=2).eval()


def volumes(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_output_keeps_the_non_cubic_input_shape_and_lies_in_tanh_range(generator):
    x = volumes(2, 1, 32, 48, 16)
    y = generator(x, MRI_TO_PET)
    assert y.shape == x.shape
    assert y.abs().max() < 1


def test_alpha_switches_the_direction(generator):
    x = volumes(1, 1, 32, 32, 32)
    assert (generator(x, MRI_TO_PET) - generator(x, PET_TO_MRI)).abs().max() > 1e-3


def test_adain_is_the_identity_at_alpha_zero_and_an_affine_map_at_one():
    adain = AdaIN(3)
    x, code = torch.randn(2, 3, 4, 5, 6), torch.randn(1, 512)
    assert torch.equal(adain(x, code, torch.tensor(0.0)), x)
    mean, scale = adain.affine(code).chunk(2, dim=1)
    expected = torch.nn.functional.softplus(scale).view(1, 3, 1, 1, 1) * x + mean.view(1, 3, 1, 1, 1)
    torch.testing.assert_close(adain(x, code, torch.tensor(1.0)), expected)
    assert (torch.nn.functional.softplus(scale) >= 0).all()


def test_mri_to_pet_does_not_depend_on_the_adain_weights_but_pet_to_mri_does():
    torch.manual_seed(1)
    net = ShareSynNet(width=2).eval()
    x = volumes(1, 1, 32, 32, 32)
    before = {alpha: net(x, alpha) for alpha in (MRI_TO_PET, PET_TO_MRI)}
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if "adain" in name or name.startswith("code."):
                parameter.add_(torch.randn_like(parameter))
    assert torch.equal(net(x, MRI_TO_PET), before[MRI_TO_PET])
    assert (net(x, PET_TO_MRI) - before[PET_TO_MRI]).abs().max() > 1e-3


def test_a_per_volume_alpha_equals_separate_calls(generator):
    a, b = volumes(1, 1, 32, 32, 32, seed=1), volumes(1, 1, 32, 32, 32, seed=2)
    together = generator(torch.cat([a, b]), torch.tensor([MRI_TO_PET, PET_TO_MRI]))
    torch.testing.assert_close(together[:1], generator(a, MRI_TO_PET), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together[1:], generator(b, PET_TO_MRI), atol=1e-5, rtol=1e-4)


def test_convolutions_are_kaiming_initialized():
    net = ShareSynNet(width=8)
    weight = net.down[3].weight  # 32 → 128 channels, 3×3×3
    fan_in = weight.shape[1] * 27
    expected = (2 / (1 + 0.2**2) / fan_in) ** 0.5
    assert weight.std().item() == pytest.approx(expected, rel=0.05)
    assert all(float(layer.bias.detach().abs().max()) == 0 for layer in net.down)


def test_the_paper_sizes_are_the_default():
    net = ShareSynNet()
    assert [conv.out_channels for conv in net.down] == [32, 128, 256, 512]
    assert [conv.out_channels for conv in net.merge] == [256, 128, 32]
    assert net.attention.heads == 8


def test_attention_keeps_the_shape_and_adds_to_its_input():
    attention = CosineSelfAttention(16, heads=8)
    x = torch.randn(2, 16, 3, 4, 2)
    assert attention(x).shape == x.shape
    with torch.no_grad():
        attention.out.weight.zero_()
        attention.out.bias.zero_()
    assert torch.equal(attention(x), x)


def test_sizes_not_divisible_by_16_are_refused_with_a_hint(generator):
    with pytest.raises(BrainlearnError, match=r"divisible by 16, not \(30, 32, 32\).*pad_to_multiple"):
        generator(volumes(1, 1, 30, 32, 32))
    with pytest.raises(BrainlearnError, match="B, 1, X, Y, Z"):
        generator(volumes(1, 2, 32, 32, 32))


def test_discriminator_gives_a_patch_map_and_refuses_too_small_inputs():
    d = ShareDiscriminator(width=2, downsamples=3)
    assert d(volumes(2, 1, 32, 48, 32)).shape == (2, 1, 4, 6, 4)
    assert ShareDiscriminator(width=2).layers[0].out_channels == 2
    with pytest.raises(BrainlearnError, match="at least 16 voxels.*lower model_options.downsamples"):
        d(volumes(1, 1, 8, 32, 32))
    with pytest.raises(BrainlearnError, match="downsamples must be an integer from 1 to 5"):
        ShareDiscriminator(downsamples=6)
