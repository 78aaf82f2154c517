"""Generation metrics: Fréchet distance against closed forms and MONAI, precision/recall on known manifolds,
MS-SSIM diversity on tiny non-cubic volumes, and backbone features in eval mode."""

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm as scipy_sqrtm
from scipy.ndimage import gaussian_filter
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.metrics_generation import (
    frechet_distance,
    generation_scores,
    ms_ssim_diversity,
    precision_recall,
    volume_features,
)

SHAPE = (24, 32, 20)  # non-cubic, tiny


def _exact_gaussian(n: int, mean: np.ndarray, sd: np.ndarray, seed: int) -> np.ndarray:
    """(n, F) Gaussian draws with sample mean ``mean`` and sample covariance (divisor n − 1) diag(sd²), exactly."""
    draws = np.random.default_rng(seed).normal(size=(n, len(mean)))
    orthonormal, _ = np.linalg.qr(draws - draws.mean(axis=0))  # centred columns, orthonormal
    return mean + orthonormal * np.sqrt(n - 1) * sd


def _reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Written out without sqrtm: Tr((Σa Σb)^½) = Tr((Σa^½ Σb Σa^½)^½) = Σ √eigenvalues of a symmetric matrix."""

    def symmetric_root(m):
        values, vectors = np.linalg.eigh(m)
        return vectors * np.sqrt(np.clip(values, 0, None)) @ vectors.T

    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = symmetric_root(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def _correlated(n: int, features: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)) @ rng.normal(size=(features, features)) + shift


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    a, b = _correlated(200, 8, 0), _correlated(150, 8, 1, shift=0.5)
    assert frechet_distance(a, a.copy()) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 1


def test_frechet_distance_equals_the_closed_form_for_diagonal_gaussians():
    mean_1, sd_1 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 0.5, 2.0, 1.5])
    mean_2, sd_2 = np.array([1.0, 1.0, 0.0, -0.5]), np.array([2.0, 0.5, 1.0, 0.1])
    a, b = _exact_gaussian(2000, mean_1, sd_1, 0), _exact_gaussian(1500, mean_2, sd_2, 1)
    # The samples' statistics are the targets exactly, so the closed form holds to round-off, not statistically.
    np.testing.assert_allclose(np.cov(b, rowvar=False), np.diag(sd_2**2), atol=1e-12)
    expected = np.sum((mean_1 - mean_2) ** 2) + np.sum(sd_1**2 + sd_2**2 - 2 * sd_1 * sd_2)
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-6)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")  # MONAI's call to scipy
@pytest.mark.parametrize(("n", "features"), [(300, 10), (6, 10)])  # fewer samples than features: singular Σ
def test_frechet_distance_equals_a_written_out_reference_and_monai(n, features):
    a, b = _correlated(n, features, 2), _correlated(n + 20, features, 3, shift=0.3)
    expected = _reference_frechet(a, b)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    fid = pytest.importorskip("monai.metrics").FIDMetric()  # same formula: sample covariances, scipy's sqrtm
    assert frechet_distance(a, b) == pytest.approx(float(fid(torch.from_numpy(b), torch.from_numpy(a))), rel=1e-8)


def test_features_constant_in_both_sets_add_nothing():
    a, b = _correlated(50, 4, 4), _correlated(50, 4, 5)
    a[:, 0] = b[:, 0] = 1.0  # zero variance in both: Σa Σb has zero rows and columns
    a[:, 1] = b[:, 1] = 2.0
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(a[:, 2:], b[:, 2:]), rel=1e-9)


def test_a_non_finite_square_root_is_retried_with_a_small_diagonal(monkeypatch, caplog):
    import brainlearn.metrics_generation as metrics_generation

    a, b = _correlated(100, 5, 6), _correlated(100, 5, 7, shift=0.5)
    exact = frechet_distance(a, b)
    products = []

    def infinite_once(product):  # what scipy returns for a product without a square root, e.g. [[0, 1], [0, 0]]
        products.append(product)
        return np.full_like(product, np.inf) if len(products) == 1 else scipy_sqrtm(product)

    monkeypatch.setattr(metrics_generation, "sqrtm", infinite_once)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-5)
    offset = 1e-6 * np.eye(5)
    np.testing.assert_allclose(products[1], (np.cov(a, rowvar=False) + offset) @ (np.cov(b, rowvar=False) + offset))
    assert "singular covariance product; adding 1e-06 to their diagonals" in caplog.text


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "needs at least 2 real samples, got 1"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "real features have 3 dimensions but fake ones 4"),
        (np.zeros(5), np.zeros((5, 1)), "expected real features (samples, features), got shape (5,)"),
    ],
)
def test_frechet_distance_refuses_bad_feature_sets(real, fake, message):
    with pytest.raises(BrainlearnError) as error:
        frechet_distance(real, fake)
    assert message in str(error.value)


def test_precision_recall_of_identical_and_distant_sets():
    real = np.random.default_rng(0).normal(size=(100, 5))
    assert precision_recall(real, real.copy()) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(real, real + 100) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every radius is 1
    fake = np.array([[0.5], [10.0]])  # k = 1: both radii are 9.5, which cover every real sample
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}


def test_mode_collapse_keeps_precision_and_halves_recall():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [20.0, 0.0]])
    real = np.concatenate([centre + rng.normal(size=(300, 2)) for centre in centres])  # two modes
    fake = centres[0] + rng.normal(size=(600, 2))  # only the first
    result = precision_recall(real, fake)
    assert result["precision"] > 0.95
    assert result["recall"] == pytest.approx(0.5, abs=0.03)


def test_precision_recall_needs_more_samples_than_k():
    with pytest.raises(BrainlearnError) as error:
        precision_recall(np.zeros((10, 2)), np.zeros((3, 2)), k=3)
    assert "precision_recall with k = 3: needs at least 4 fake samples, got 3" in str(error.value)


def test_generation_scores_combines_the_metrics():
    real, fake = _correlated(80, 4, 6), _correlated(60, 4, 7, shift=0.2)
    scores = generation_scores(real, fake, k=5)
    assert scores == {"frechet_distance": frechet_distance(real, fake), **precision_recall(real, fake, k=5)}


def _smooth_volume(seed: int, shape=SHAPE) -> np.ndarray:
    """(1, X, Y, Z) smooth tissue-like volume in [-1, 1]."""
    noise = np.random.default_rng(seed).normal(size=shape)
    return np.clip(gaussian_filter(noise, 2.0) * 6, -1, 1)[None]


def test_ms_ssim_diversity_of_identical_volumes_is_one():
    volume = _smooth_volume(0)
    assert ms_ssim_diversity(np.stack([volume] * 3)) == pytest.approx(1.0, abs=1e-5)


def test_independent_volumes_are_more_diverse_than_perturbed_copies():
    base = _smooth_volume(1)
    copies = np.stack([np.clip(base + 0.2 * _smooth_volume(seed), -1, 1) for seed in range(2, 6)])
    independent = np.stack([_smooth_volume(seed) for seed in range(6, 10)])
    assert ms_ssim_diversity(independent) < ms_ssim_diversity(copies) - 0.3
    assert 0 <= ms_ssim_diversity(independent) < 0.5


def test_ms_ssim_diversity_honours_data_range_and_matches_the_inpainting_ms_ssim():
    inpainting = pytest.importorskip("brainlearn.methods.inpainting")
    first, second = torch.from_numpy(_smooth_volume(10)).float(), torch.from_numpy(_smooth_volume(11)).float()
    volumes = torch.stack([first, second])
    own_range = float(second.max() - second.min())  # inpainting.ms_ssim's data range: the target's
    expected = float(inpainting.ms_ssim(first[None], second[None])[0])
    assert ms_ssim_diversity(volumes, data_range=own_range) == pytest.approx(expected, abs=1e-5)
    # Larger constants (range 20) flatten the differences between the volumes: SSIM moves towards 1.
    assert ms_ssim_diversity(volumes, data_range=20.0) > ms_ssim_diversity(volumes) + 0.05


@pytest.mark.parametrize("shape", [(12, 16, 10), (6, 8, 5)])  # 2 scales, 1 scale
def test_ms_ssim_diversity_uses_fewer_scales_on_small_volumes(shape):
    volume = _smooth_volume(12, shape)
    assert ms_ssim_diversity(np.stack([volume, volume])) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim_diversity(np.stack([volume, _smooth_volume(13, shape)])) < 0.9


@pytest.mark.parametrize(
    ("volumes", "message"),
    [
        (np.zeros((1, 1, *SHAPE)), "needs at least 2 volumes to compare, got 1"),
        (np.zeros((3, 1, 8, 4, 8)), "volumes (8, 4, 8) are too small for MS-SSIM"),
        (np.zeros((3, *SHAPE)), "expected volumes (N, C, X, Y, Z), got shape (3, 24, 32, 20)"),
    ],
)
def test_ms_ssim_diversity_refuses_bad_volumes(volumes, message):
    with pytest.raises(BrainlearnError) as error:
        ms_ssim_diversity(volumes)
    assert message in str(error.value)


class _TinyBackbone(nn.Module):
    """The backbone contract, (B, C, X, Y, Z) → (B, 6), with batch norm and dropout so that eval mode matters."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(1, 6, 3, stride=2), nn.BatchNorm3d(6), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
            nn.Dropout(0.5),
        )  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_volume_features_in_eval_mode_equal_forward_features_and_restore_modes():
    torch.manual_seed(0)
    backbone = _TinyBackbone().train()
    backbone.net[1].eval()  # a frozen batch norm inside a training model keeps its own mode
    volumes = torch.randn(5, 1, *SHAPE)
    running_mean = backbone.net[1].running_mean.clone()
    features = volume_features(backbone, volumes, batch_size=2)
    assert features.shape == (5, 6)
    assert features.dtype == np.float64
    assert backbone.training and backbone.net[5].training and not backbone.net[1].training
    torch.testing.assert_close(backbone.net[1].running_mean, running_mean)
    with torch.no_grad():
        expected = backbone.eval().forward_features(volumes).double().numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_volume_features_from_an_iterable_of_volumes_and_batches():
    torch.manual_seed(0)
    backbone = _TinyBackbone().eval()
    volumes = torch.randn(5, 1, *SHAPE)
    pieces = [volumes[0], volumes[1:4], volumes[4]]  # a single volume, a batch of 3, another volume
    np.testing.assert_allclose(
        volume_features(backbone, iter(pieces), batch_size=3), volume_features(backbone, volumes), rtol=1e-5
    )


def test_volume_features_refuses_a_module_without_forward_features_and_3d_images():
    with pytest.raises(BrainlearnError) as error:
        volume_features(nn.Linear(3, 2), torch.zeros(2, 3))
    assert "Linear has no forward_features" in str(error.value)
    with pytest.raises(BrainlearnError) as error:
        volume_features(_TinyBackbone(), [torch.zeros(SHAPE)])
    assert "got shape (24, 32, 20). Add the channel axis" in str(error.value)
