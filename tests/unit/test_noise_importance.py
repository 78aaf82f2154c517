"""Noise-model importance maps (Bintsi et al. 2021) on toy predictors that look only at a known box."""

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.explain.noise import (
    NoiseScaleNet,
    fit_noise_model,
    noise_importance,
    noise_objective,
    optimize_noise,
    preservation_loss,
)

SHAPE = (12, 14, 10)
HEAD = (slice(2, 10), slice(2, 12), slice(2, 8))  # a border of two background voxels around the head
BOX = (slice(2, 6), slice(2, 7), slice(2, 5))  # the region R the toy predictors look at: 60 of the 480 head voxels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The volumes are tiny: a second thread only adds synchronization, and slows down badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BoxRegressor(nn.Module):
    """f(x) = scale · sum of x over R: noise of σ = 1.5 in R moves the output by ~1.5x its spread over images."""

    def __init__(self, scale: float = 0.1):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, image):
        return (image[(..., *BOX)] * self.scale).flatten(1).sum(1, keepdim=True)  # (B, 1)


class BoxClassifier(BoxRegressor):
    """Two logits (v, −v) with v = scale · sum of x over R."""

    def forward(self, image):
        value = super().forward(image)
        return torch.cat([value, -value], dim=1)  # (B, 2)


def make_images(count, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, *SHAPE)
    images[(..., *HEAD)] = torch.randn(count, 1, 8, 10, 6, generator=generator)
    return images


def region_means(importance):
    """Mean importance (B, X, Y, Z) inside R and in the rest of the head."""
    box = torch.zeros(SHAPE, dtype=torch.bool)
    box[BOX] = True
    head = torch.zeros(SHAPE, dtype=torch.bool)
    head[HEAD] = True
    return importance[:, box].mean().item(), importance[:, head & ~box].mean().item()


def check_importance_map(importance, images):
    assert importance.shape == (images.shape[0], *SHAPE)
    assert importance.dtype == torch.float32
    assert torch.isfinite(importance).all()
    assert importance.min() >= 0.0 and importance.max() <= 1.0
    outside = torch.ones(SHAPE, dtype=torch.bool)
    outside[HEAD] = False
    assert (importance[:, outside] == 0).all()


@pytest.fixture(scope="module")
def fitted_on_box():
    images = make_images(8, seed=1)
    model = fit_noise_model(BoxRegressor(), list(images.split(2)), epochs=40)  # 160 Adam steps, default lr
    return model, images


def test_fitted_noise_model_finds_the_box_the_regressor_looks_at(fitted_on_box):
    model, images = fitted_on_box
    held_out = make_images(4, seed=7)  # the amortized model maps unseen images too
    for batch in (images, held_out):
        with torch.no_grad():
            importance = noise_importance(model(batch), batch, max_sigma=model.max_sigma)
        check_importance_map(importance, batch)
        inside, outside = region_means(importance)
        assert inside > 0.8 and inside - outside > 0.4, (inside, outside)  # typically 0.95 and 0.1-0.3


def test_fitted_model_is_returned_in_eval_mode(fitted_on_box):
    model, _ = fitted_on_box
    assert isinstance(model, NoiseScaleNet) and not model.training


@pytest.mark.parametrize("predictor", [BoxRegressor(), BoxClassifier()], ids=["regressor", "classifier"])
def test_optimized_noise_finds_the_box(predictor):
    images = make_images(2, seed=3)
    sigma = optimize_noise(predictor, images)
    assert sigma.shape == (2, 1, *SHAPE)
    importance = noise_importance(sigma, images, max_sigma=3.0)
    check_importance_map(importance, images)
    inside, outside = region_means(importance)
    assert inside > 0.6 and outside < 0.1, (inside, outside)  # typically 0.86-0.9 and 0.004


def test_noise_scale_net_keeps_any_shape_and_starts_at_half_max_sigma():
    model = NoiseScaleNet(2, width=4, max_sigma=2.0)
    sigma = model(torch.randn(3, 2, 7, 9, 5))
    assert sigma.shape == (3, 1, 7, 9, 5)
    torch.testing.assert_close(sigma, torch.full_like(sigma, 1.0))


def test_preservation_loss_is_zero_for_identical_outputs():
    outputs = torch.randn(4, 3)
    assert preservation_loss(outputs, outputs.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert preservation_loss(outputs[:, :1], outputs[:, :1].clone()).item() == 0.0


def test_preservation_loss_of_logits_is_the_kl_divergence():
    reference = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    noisy = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    p, q = reference.softmax(dim=1), noisy.softmax(dim=1)
    by_hand = (p * (p.log() - q.log())).sum(dim=1).mean()
    expected = F.kl_div(noisy.log_softmax(dim=1), p, reduction="batchmean")
    assert preservation_loss(reference, noisy).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert preservation_loss(reference, noisy).item() == pytest.approx(expected.item(), rel=1e-5)
    assert preservation_loss(reference, noisy).item() > 0.1


def test_preservation_loss_of_a_regressor_is_the_mean_squared_difference():
    reference = torch.tensor([[60.0], [70.0], [80.0]])
    noisy = torch.tensor([[61.0], [68.0], [80.0]])
    assert preservation_loss(reference, noisy).item() == pytest.approx(5 / 3)
    assert preservation_loss(reference[:, 0], noisy[:, 0]).item() == pytest.approx(5 / 3)  # (B,) counts as K = 1


def test_noise_objective_rewards_noise_and_logs_its_mean_over_the_head():
    images = make_images(2, seed=4)
    sigma = torch.full((2, 1, *SHAPE), 0.5)
    loss, logs = noise_objective(
        lambda x: x.sum(dim=(1, 2, 3, 4))[:, None] * 0, images, sigma, background=0.0, weight=2.0
    )
    assert logs == {"preservation": 0.0, "mean_sigma": pytest.approx(0.5)}
    assert loss.item() == pytest.approx(-2.0 * torch.log(torch.tensor(0.5)).item())


def test_noise_importance_is_one_minus_the_scaled_sigma_inside_the_head():
    images = make_images(1, seed=5)
    sigma = torch.full((1, 1, *SHAPE), 0.75)
    importance = noise_importance(sigma.double(), images, max_sigma=3.0)
    check_importance_map(importance, images)
    assert importance[(0, *HEAD)].unique().tolist() == [0.75]


def test_fitting_leaves_the_predictor_untouched(caplog):
    predictor = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(1))
    predictor(make_images(2, seed=6))  # materialize the lazy layer and move the batch-norm statistics
    predictor[0].weight.requires_grad_(False)
    predictor[2].eval()  # a mixed state must come back as it was; batch norm stays in training mode
    before = {name: value.clone() for name, value in predictor.state_dict().items()}
    flags = [parameter.requires_grad for parameter in predictor.parameters()]
    modes = [module.training for module in predictor.modules()]
    images = make_images(4, seed=6)

    with caplog.at_level(logging.INFO, logger="brainlearn"):
        fit_noise_model(predictor, list(images.split(2)), epochs=1)
    assert "noise model epoch 1/1: preservation" in caplog.text
    optimize_noise(predictor, images[:1], steps=2)

    for name, value in predictor.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    assert [parameter.requires_grad for parameter in predictor.parameters()] == flags
    assert all(parameter.grad is None for parameter in predictor.parameters())
    assert [module.training for module in predictor.modules()] == modes


def test_same_seed_gives_the_same_sigma():
    images = make_images(4, seed=8)
    rng_before = torch.get_rng_state()

    def fitted_sigma(seed):
        model = fit_noise_model(BoxRegressor(), list(images.split(2)), epochs=2, width=4, seed=seed)
        with torch.no_grad():
            return model(images)

    assert torch.equal(fitted_sigma(0), fitted_sigma(0))
    assert not torch.equal(fitted_sigma(0), fitted_sigma(1))
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeding does not touch the global generator
    first, second = (optimize_noise(BoxRegressor(), images[:2], steps=20, seed=0) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, optimize_noise(BoxRegressor(), images[:2], steps=20, seed=1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: optimize_noise(BoxRegressor(), torch.zeros(1, *SHAPE)),
            r"expected a float image batch \(B, C, X, Y, Z\)",
        ),
        (lambda: fit_noise_model(BoxRegressor(), [torch.zeros(1, *SHAPE)]), r"got shape \(1, 12, 14, 10\)"),
        (lambda: fit_noise_model(BoxRegressor(), [make_images(1, 0)], epochs=0), "epochs must be >= 1, got 0"),
        (lambda: fit_noise_model(BoxRegressor(), []), "no images to train the noise model on"),
        (lambda: fit_noise_model(BoxRegressor(), [make_images(1, 0)], in_channels=2), "Pass in_channels=1"),
        (lambda: fit_noise_model(BoxRegressor(), iter([make_images(1, 0)]), epochs=2), "not a generator"),
        (lambda: optimize_noise(BoxRegressor(), make_images(1, 0), steps=0), "steps must be >= 1, got 0"),
        (lambda: optimize_noise(BoxRegressor(), make_images(1, 0), weight=-1.0), "weight must be >= 0, got -1.0"),
        (lambda: optimize_noise(BoxRegressor(), make_images(1, 0), max_sigma=0.0), "max_sigma must be a positive"),
        (lambda: optimize_noise(lambda x: x, make_images(1, 0)), r"must return a \(1, K\) tensor"),
        (lambda: noise_importance(torch.zeros(1, 1, 3, 3, 3), make_images(1, 0), max_sigma=3.0), "expected sigma"),
        (lambda: preservation_loss(torch.zeros(2, 2), torch.zeros(2, 3)), "of the same shape"),
    ],
    ids=[
        "4d-image",
        "4d-batch",
        "no-epochs",
        "no-images",
        "channels",
        "one-shot-iterator",
        "no-steps",
        "negative-weight",
        "zero-max-sigma",
        "bad-predictor-output",
        "sigma-shape",
        "output-shapes",
    ],
)
def test_bad_input_raises_a_readable_error(call, message):
    with pytest.raises(BrainlearnError, match=message):
        call()
