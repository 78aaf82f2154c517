"""SAM takes the two-step update of its definition, wraps SGD and AdamW, and its state survives a checkpoint."""

import copy

import pytest
import torch
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.optim import SAM, frozen_norm_stats


def _quadratic(seed: int = 0, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric positive definite A (n, n) and a starting point w (n,), float64."""
    rng = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=rng, dtype=torch.float64)
    return m @ m.T + n * torch.eye(n, dtype=torch.float64), torch.randn(n, generator=rng, dtype=torch.float64)


def _sam_step(a: torch.Tensor, w0: torch.Tensor, **options) -> torch.Tensor:
    """One SAM.step on f(w) = ½ wᵀAw from w0; returns the new w."""
    w = nn.Parameter(w0.clone())
    optimizer = SAM([w], torch.optim.SGD, lr=0.1, **options)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * w @ a @ w
        loss.backward()
        return loss

    closure()  # g at w0
    optimizer.step(closure)
    return w.detach()


@pytest.mark.parametrize("rho", [0.0, 0.05, 0.5])
def test_sam_step_is_the_two_step_update_on_a_quadratic(rho):
    a, w0 = _quadratic()
    g = a @ w0
    w_adv = w0 + rho * g / g.norm()
    expected = w0 - 0.1 * (a @ w_adv)
    torch.testing.assert_close(_sam_step(a, w0, rho=rho), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.01])
def test_adaptive_sam_step_scales_the_ascent_by_the_weights(eta):
    a, w0 = _quadratic(1)
    rho = 0.5
    g, t = a @ w0, w0.abs() + eta  # ASAM: ε = ρ T² g / ‖T g‖
    w_adv = w0 + rho * t**2 * g / (t * g).norm()
    expected = w0 - 0.1 * (a @ w_adv)
    got = _sam_step(a, w0, rho=rho, adaptive=True, eta=eta)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_first_and_second_step_equal_step_with_a_closure():
    a, w0 = _quadratic(2)
    w = nn.Parameter(w0.clone())
    optimizer = SAM([w], torch.optim.SGD, rho=0.2, lr=0.1)
    (0.5 * w @ a @ w).backward()
    optimizer.first_step(zero_grad=True)
    (0.5 * w @ a @ w).backward()
    optimizer.second_step(zero_grad=True)
    torch.testing.assert_close(w.detach(), _sam_step(a, w0, rho=0.2), rtol=1e-12, atol=1e-12)
    assert w.grad is None
    with pytest.raises(RuntimeError, match="call first_step first"):
        optimizer.second_step()


def _train(optimizer: SAM, w: nn.Parameter, a: torch.Tensor, steps: int) -> None:
    for _ in range(steps):

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = 0.5 * w @ a @ w
            loss.backward()
            return loss

        closure()
        optimizer.step(closure)


@pytest.mark.parametrize(
    ("base", "options"),
    [(torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}), (torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.01})],
)
def test_state_dict_round_trip_resumes_the_same_trajectory(base, options):
    a, w0 = _quadratic(3)
    w = nn.Parameter(w0.clone())
    optimizer = SAM([w], base, rho=0.1, adaptive=True, **options)
    _train(optimizer, w, a, 3)
    state = copy.deepcopy(optimizer.state_dict())  # as a checkpoint file holds it, not the live buffers
    assert state["state"][0], "the base optimizer's buffers must be in the state dict"
    assert state["param_groups"][0]["rho"] == 0.1 and state["param_groups"][0]["adaptive"] is True

    resumed = nn.Parameter(w.detach().clone())
    other = SAM([resumed], base, rho=0.5, **options)  # rho and adaptive come back from the state dict
    other.load_state_dict(state)
    assert other.base_optimizer.param_groups is other.param_groups and other.state is other.base_optimizer.state
    _train(optimizer, w, a, 2)
    _train(other, resumed, a, 2)
    torch.testing.assert_close(resumed.detach(), w.detach(), rtol=0, atol=0)


def test_sam_with_momentum_lowers_a_quadratic():
    a, w0 = _quadratic(4)
    w = nn.Parameter(w0.clone())
    _train(SAM([w], torch.optim.SGD, rho=0.05, lr=0.01, momentum=0.9), w, a, 50)
    assert (0.5 * w @ a @ w).item() < 0.1 * (0.5 * w0 @ a @ w0).item()


@pytest.mark.parametrize("rho", [-0.1, float("nan"), "0.05", True])
def test_rho_must_be_a_non_negative_number(rho):
    with pytest.raises(BrainlearnError, match=r"SAM: rho must be a number >= 0, not"):
        SAM([nn.Parameter(torch.zeros(2))], torch.optim.SGD, rho=rho, lr=0.1)


def test_base_optimizer_must_be_an_optimizer_class():
    with pytest.raises(BrainlearnError, match="base_optimizer_cls must be a torch optimizer class"):
        SAM([nn.Parameter(torch.zeros(2))], torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), lr=0.1)


def test_step_without_closure_says_what_to_do():
    with pytest.raises(BrainlearnError, match="SAM.step needs a closure"):
        SAM([nn.Parameter(torch.zeros(2))], torch.optim.SGD, lr=0.1).step()


def test_frozen_norm_stats_keeps_running_statistics_and_restores_momentum():
    norm = nn.BatchNorm1d(3)
    norm(torch.randn(8, 3))
    mean, var, tracked = norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()
    with frozen_norm_stats(nn.Sequential(norm)):
        out = norm(torch.randn(8, 3) + 5)
    assert out.mean().abs() < 1e-5  # still normalized by the batch
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
    assert torch.equal(norm.num_batches_tracked, tracked) and norm.momentum == 0.1
