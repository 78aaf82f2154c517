"""Denoiser3D: shapes on non-cubic latents, in-plane convolutions, depth attention, conditioning, input checks."""

import math

import pytest
import torch

from brainlearn.errors import BrainlearnError
from brainlearn.models.denoiser import Denoiser3D

TINY = {"channels": 8, "multipliers": (1, 2), "heads": 2, "head_channels": 4, "groups": 4}


def _denoiser(**options) -> Denoiser3D:
    torch.manual_seed(0)
    return Denoiser3D(4, **{**TINY, **options}).eval()


@pytest.fixture(scope="module")
def conditional():
    return _denoiser(num_classes=3, age=True)


def _latents(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_output_has_the_input_shape_on_a_non_cubic_latent_of_any_depth(conditional):
    x, t = _latents(2, 4, 8, 12, 5), torch.tensor([0, 299])
    out = conditional(x, t, torch.tensor([2, -1]), torch.tensor([70.0, math.nan]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert _denoiser()(_latents(1, 4, 8, 12, 1), torch.tensor([3])).shape == (1, 4, 8, 12, 1)


def test_convolutions_and_resampling_act_in_plane_only():
    for layer in _denoiser().modules():
        if isinstance(layer, torch.nn.Conv3d):
            assert layer.kernel_size[2] == 1 and layer.stride[2] == 1, layer


def test_depth_attention_carries_information_between_slices():
    net = _denoiser()
    x = _latents(1, 4, 8, 8, 6)
    changed = x.clone()
    changed[..., 0] += 1.0
    with torch.no_grad():
        difference = (net(changed, torch.tensor([5])) - net(x, torch.tensor([5])))[..., 5]
    assert difference.abs().max() > 1e-4  # the in-plane convolutions alone could not reach slice 5 from slice 0


def test_label_and_age_change_the_prediction(conditional):
    x, t = _latents(2, 4, 8, 8, 3), torch.tensor([10, 10])
    with torch.no_grad():
        by_label = conditional(x, t, torch.tensor([0, 1]), torch.tensor([70.0, 70.0]))
        by_age = conditional(x, t, torch.tensor([0, 0]), torch.tensor([60.0, 85.0]))
        same = conditional(x, t, torch.tensor([0, 0]), torch.tensor([70.0, 70.0]))
    assert (by_label - same)[1].abs().max() > 1e-4
    assert (by_age - same).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-4


def test_label_minus_one_and_nan_age_are_the_no_condition_embedding(conditional):
    x, t = _latents(2, 4, 8, 8, 3), torch.tensor([4, 9])
    with torch.no_grad():
        unknown = conditional(x, t, torch.tensor([-1, -1]), torch.tensor([math.nan, math.nan]))
        absent = conditional(x, t)
        embedding = conditional._conditions(x, torch.tensor([-1, 1]), torch.tensor([math.nan, 50.0]))
    torch.testing.assert_close(unknown, absent)
    no_condition = conditional.label_embedding.weight[3] + conditional.no_age
    torch.testing.assert_close(embedding[0], no_condition)
    assert (embedding[1] - no_condition).abs().max() > 1e-3


def test_a_nan_age_gives_finite_gradients():
    net = _denoiser(age=True).train()
    out = net(_latents(2, 4, 8, 8, 2), torch.tensor([1, 2]), age=torch.tensor([math.nan, 60.0]))
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_in_plane_sizes_must_divide_by_two_per_halving():
    net = _denoiser(multipliers=(1, 2, 2))
    with pytest.raises(BrainlearnError, match=r"divisible by 4, not shape \(1, 4, 8, 10, 5\)"):
        net(_latents(1, 4, 8, 10, 5), torch.tensor([0]))


def test_conditions_an_unconditional_model_was_not_built_for_are_refused():
    net = _denoiser()
    x, t = _latents(1, 4, 8, 8, 2), torch.tensor([0])
    with pytest.raises(
        BrainlearnError, match="label was given, but the network was built without label conditioning.*num_classes > 0"
    ):
        net(x, t, label=torch.tensor([0]))
    with pytest.raises(
        BrainlearnError, match="age was given, but the network was built without age conditioning.*age=True"
    ):
        net(x, t, age=torch.tensor([60.0]))


def test_bad_labels_and_settings_are_refused(conditional):
    x, t = _latents(1, 4, 8, 8, 2), torch.tensor([0])
    with pytest.raises(BrainlearnError, match=r"labels must lie in \[0, 3\) or be −1.*\[3\]"):
        conditional(x, t, torch.tensor([3]))
    with pytest.raises(BrainlearnError, match=r"one value per latent \(1,\), not \(2,\)"):
        conditional(x, t, age=torch.tensor([60.0, 70.0]))
    with pytest.raises(BrainlearnError, match="groups=3 must divide"):
        Denoiser3D(4, **{**TINY, "groups": 3})
