"""The TSAN ranking loss and the brain-age losses built on it."""

import pytest
import torch

from brainlearn.errors import BrainlearnError
from brainlearn.losses import BRAIN_AGE_LOSSES, brain_age_loss, ranking_loss


def brute_force_ranking(predicted, target, margin):
    costs = []
    for i in range(len(target)):
        for j in range(len(target)):
            if target[i] != target[j]:
                sign = 1.0 if target[i] > target[j] else -1.0
                costs.append(max(0.0, margin - sign * (predicted[i] - predicted[j])))
    return sum(costs) / len(costs) if costs else 0.0


def test_zero_when_the_order_is_right_with_margin():
    target = torch.tensor([60.0, 70.0, 65.0, 80.0])
    predicted = target / 5  # same order, neighbours at least 1 apart
    assert ranking_loss(predicted, target, margin=1.0).item() == 0.0
    assert ranking_loss(predicted, target, margin=5.0).item() > 0.0  # too close for this margin


def test_positive_when_reversed():
    target = torch.tensor([60.0, 70.0, 80.0])
    # pairs: |p_i - p_j| = 10, 10, 20 in the wrong order → mean(10, 10, 20) over both orders
    assert ranking_loss(-target, target).item() == pytest.approx(40 / 3)


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_matches_a_double_loop(margin):
    torch.manual_seed(0)
    target = torch.randint(50, 60, (12,)).float()  # with ties
    predicted = torch.randn(12) * 5 + 55
    expected = brute_force_ranking(predicted.tolist(), target.tolist(), margin)
    assert ranking_loss(predicted, target, margin=margin).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("target", [torch.tensor([70.0]), torch.full((5,), 70.0)])
def test_zero_without_ranked_pairs_and_no_nan(target):
    predicted = torch.randn(len(target), requires_grad=True)
    loss = ranking_loss(predicted, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(predicted.grad).all()


def test_gradient_pushes_the_order_right():
    predicted = torch.tensor([2.0, 1.0], requires_grad=True)
    ranking_loss(predicted, torch.tensor([1.0, 2.0])).backward()
    assert predicted.grad[0] > 0 > predicted.grad[1]


@pytest.mark.parametrize("name", BRAIN_AGE_LOSSES)
def test_brain_age_losses(name):
    torch.manual_seed(1)
    predicted, target = torch.randn(6, 1) * 10 + 60, torch.randn(6) * 10 + 60
    flat = predicted[:, 0]
    base = torch.mean((flat - target) ** 2) if name.startswith("mse") else torch.mean((flat - target).abs())
    expected = base + (0.5 * ranking_loss(flat, target) if "ranking" in name else 0)
    torch.testing.assert_close(brain_age_loss(name, predicted, target, ranking_weight=0.5), expected)


def test_unknown_loss_suggests_the_nearest():
    with pytest.raises(BrainlearnError, match=r"Unknown brain-age loss 'l1\+rank' \(did you mean 'l1\+ranking'\?\)"):
        brain_age_loss("l1+rank", torch.zeros(2), torch.zeros(2))


def test_mismatched_shapes_say_what_was_expected():
    with pytest.raises(BrainlearnError, match=r"same shape \(B,\) or \(B, 1\), got \(4, 2\) and \(4,\)"):
        ranking_loss(torch.zeros(4, 2), torch.zeros(4))
