"""Synthesis metrics: MAE and PSNR inside the head, 3D SSIM against scikit-image and a NumPy reference."""

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from brainlearn.errors import BrainlearnError
from brainlearn.metrics_synthesis import brain_mask, synthesis_metrics, synthesis_table_metrics

SHAPE = (20, 24, 16)


def _head(seed: int, shape=SHAPE) -> np.ndarray:
    """An image in [-1, 1]: background -1 around an ellipsoid of smooth tissue between -0.6 and 1."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.7
    tissue = np.clip(gaussian_filter(rng.normal(0, 1, shape), 1.5) * 4 + 0.2, -0.6, 1)
    return np.where(inside, tissue, -1.0)


def _noisy(image: np.ndarray, seed: int, sd: float = 0.15) -> np.ndarray:
    return np.clip(image + np.random.default_rng(seed).normal(0, sd, image.shape), -1, 1)


def _reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float, windows) -> float:
    """Wang et al. (2004) SSIM, written out: separable Gaussian (σ 1.5) windows of the given sizes, no padding."""

    def local_mean(a):
        for axis, k in enumerate(windows):
            weights = np.exp(-0.5 * ((np.arange(k) - (k - 1) / 2) / 1.5) ** 2)
            a = np.apply_along_axis(np.convolve, axis, a, weights / weights.sum(), mode="valid")
        return a

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = local_mean(x), local_mean(y)
    vx, vy, cxy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    return float(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def test_identical_images_are_perfect():
    real = _head(0)
    result = synthesis_metrics(real.copy(), real)
    # PSNR is infinite for MSE 0 (no finite value is right); it never happens for a real model's output.
    assert result == {"mae": 0.0, "psnr": np.inf, "ssim": pytest.approx(1.0, abs=1e-6)}


def test_ssim_equals_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    real = _head(1)
    synthesized = _noisy(real, 2)
    expected = skimage_metrics.structural_similarity(
        synthesized, real, data_range=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    # Same window (scikit-image truncates σ 1.5 at 3.5 σ: 11 voxels) and the same valid region; MONAI computes in
    # float32, which costs ~1e-6 here, so 1e-4 is already strict.
    assert synthesis_metrics(synthesized, real)["ssim"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("shape", "windows"), [(SHAPE, (11, 11, 11)), ((16, 9, 12), (11, 9, 11)), ((14, 8, 12), (11, 7, 11))]
)
def test_ssim_equals_written_out_reference_and_shrinks_the_window_on_short_axes(shape, windows):
    real = _head(3, shape)
    synthesized = _noisy(real, 4)
    expected = _reference_ssim(synthesized, real, 2.0, windows)
    assert synthesis_metrics(synthesized, real)["ssim"] == pytest.approx(expected, abs=1e-4)


def test_data_range_one_on_minus_one_to_one_images_lowers_ssim():
    # The reference code's mistake: data range 1 on [-1, 1] images shrinks c1 and c2 four-fold, so noise in flat
    # regions counts more and SSIM drops; PSNR moves by 20 · log10(2) dB.
    real = _head(5)
    synthesized = _noisy(real, 6)
    right, wrong = synthesis_metrics(synthesized, real), synthesis_metrics(synthesized, real, data_range=1.0)
    assert wrong["ssim"] < right["ssim"] - 0.005
    assert right["psnr"] - wrong["psnr"] == pytest.approx(20 * np.log10(2))
    assert wrong["mae"] == right["mae"]


def test_psnr_and_mae_of_a_constant_offset_inside_the_mask():
    real = _head(7)
    mask = brain_mask(real)
    synthesized = np.where(mask, real + 0.1, real)
    result = synthesis_metrics(synthesized, real)
    assert result["mae"] == pytest.approx(0.1)
    assert result["psnr"] == pytest.approx(10 * np.log10(4 / 0.01))


def test_mae_and_psnr_count_only_the_mask():
    real = _head(8)
    background_error = np.where(brain_mask(real), real, 0.5)  # wrong everywhere outside the head
    result = synthesis_metrics(background_error, real)
    assert result["mae"] == 0 and result["psnr"] == np.inf
    assert result["ssim"] < 0.9  # SSIM looks at the whole volume

    mask = np.zeros(SHAPE, dtype=bool)
    mask[:2] = True  # only background voxels, where the error is 1.5
    assert synthesis_metrics(background_error, real, mask=mask)["mae"] == pytest.approx(1.5)


def test_brain_mask_keeps_voxels_above_five_percent_of_the_range():
    real = np.array([-1.0, -0.95, -0.9, -0.85, 0.5]).reshape(1, 1, 5)
    assert brain_mask(real).ravel().tolist() == [False, False, False, True, True]
    assert brain_mask(real, threshold=0.0).ravel().tolist() == [False, False, False, False, True]


def test_bad_input_is_refused_with_a_message():
    real = _head(9)
    with pytest.raises(BrainlearnError, match=r"got synthesized \(20, 24, 15\) and real \(20, 24, 16\)"):
        synthesis_metrics(real[..., :-1], real)
    with pytest.raises(BrainlearnError, match=r"expected two 3D images .* got synthesized \(20, 24\)"):
        synthesis_metrics(real[..., 0], real[..., 0])
    broken = real.copy()
    broken[0, 0, :2] = [np.nan, np.inf]
    with pytest.raises(BrainlearnError, match="the synthesized image has 2 NaN or infinite voxel"):
        synthesis_metrics(broken, real)
    with pytest.raises(BrainlearnError, match="the real image has 2 NaN or infinite voxel"):
        synthesis_metrics(real, broken)
    with pytest.raises(
        BrainlearnError, match=r"brain_mask\(real\) is empty: .* \(its maximum is -1\)\. Scale the images"
    ):
        synthesis_metrics(real, np.full(SHAPE, -1.0))
    with pytest.raises(BrainlearnError, match=r"the mask has shape \(20, 24\) but the images \(20, 24, 16\)"):
        synthesis_metrics(real, real, mask=np.ones(SHAPE[:2], dtype=bool))
    with pytest.raises(BrainlearnError, match="the mask passed holds no voxel"):
        synthesis_metrics(real, real, mask=np.zeros(SHAPE, dtype=bool))
    with pytest.raises(BrainlearnError, match="data_range must be positive"):
        synthesis_metrics(real, real, data_range=0)


def test_table_metrics_are_means_with_bootstrap_intervals():
    rng = np.random.default_rng(10)
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(30)],
            "mae": rng.uniform(0.05, 0.15, 30),
            "psnr": rng.uniform(20, 28, 30),
            "ssim": rng.uniform(0.7, 0.9, 30),
        }
    )
    intervals = synthesis_table_metrics(table, n_bootstrap=300, seed=1)
    assert list(intervals) == ["mae", "psnr", "ssim"]
    for name, (estimate, lower, upper) in intervals.items():
        assert estimate == pytest.approx(table[name].mean())
        assert lower < estimate < upper
        assert intervals[name].n_valid == 300
    assert synthesis_table_metrics(table, n_bootstrap=300, seed=1) == intervals


def test_table_metrics_refuse_missing_columns_and_nan():
    with pytest.raises(BrainlearnError, match=r"lacks column\(s\) \['ssim'\] \(it has \['mae', 'psnr'\]\)"):
        synthesis_table_metrics(pd.DataFrame({"mae": [0.1], "psnr": [25.0]}))
    with pytest.raises(BrainlearnError, match=r"psnr has 1 NaN or infinite value\(s\) \(first at row 1\)"):
        synthesis_table_metrics(pd.DataFrame({"mae": [0.1, 0.2], "psnr": [25.0, np.inf], "ssim": [0.8, 0.9]}))
