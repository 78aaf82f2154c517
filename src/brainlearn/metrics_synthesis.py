"""How close a synthesized image (e.g. PET from MRI, document 000's ShareGAN) is to the real one.

Images are in the synthesis models' scale, [-1, 1] with background at -1, so their data range is 2. MAE and PSNR
are computed inside a mask of the head (by default :func:`brain_mask` of the real image): over the whole field of
view they would be dominated by background, which any model reproduces, and would change with the head's share of
the volume. SSIM is computed in 3D over the whole volume with the data range of the images (2). The reference code
of document 000 computed it slice by slice with data range 1 on [-1, 1] images, which shrinks the stabilizing
constants four-fold: noise in flat regions then weighs more and SSIM comes out lower (0.870 instead of 0.880 on the
noisy pair of tests/unit/test_metrics_synthesis.py). Numbers from it are not comparable with ours::

    rows = [{"participant_id": pid, **synthesis_metrics(synthesized, real)} for pid, synthesized, real in pairs]
    synthesis_table_metrics(pd.DataFrame(rows))  # {"mae": Interval(mean, lower, upper), "psnr": ..., "ssim": ...}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainlearn.errors import BrainlearnError
from brainlearn.metrics import Interval, as_vector, bootstrap

COLUMNS = ("mae", "psnr", "ssim")
# Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 13:600 (2004).
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def brain_mask(real: np.ndarray, *, threshold: float = -0.9) -> np.ndarray:
    """Voxels of the real image above ``threshold``: the head, without the background.

    In the [-1, 1] scale the background is -1 and -0.9 lies 5 % of the range above it, high enough to drop
    background noise and low enough to keep dark tissue (CSF in MRI, white matter in PET). The mask comes from the
    real image, never the synthesized one, so every model is scored on the same voxels.

    Args:
        real: (X, Y, Z) real image in [-1, 1].
        threshold: voxels strictly above it are kept.

    Returns:
        (X, Y, Z) boolean mask.
    """
    return np.asarray(real) > threshold


def synthesis_metrics(
    synthesized: np.ndarray, real: np.ndarray, *, mask: np.ndarray | None = None, data_range: float = 2.0
) -> dict[str, float]:
    """MAE, PSNR and 3D SSIM of one synthesized image against its real counterpart.

    SSIM follows Wang et al. (2004) in 3D with MONAI: a Gaussian window of 11 voxels (σ = 1.5 voxels), k1 = 0.01,
    k2 = 0.03, averaged over every voxel where the window fits inside the volume (no padding), as scikit-image's
    ``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``. Along an axis shorter than
    11 voxels the window shrinks to the largest odd size that fits (σ stays 1.5, so the Gaussian is cut shorter);
    along an axis of 1 voxel SSIM is therefore computed per slice.

    Args:
        synthesized: (X, Y, Z) synthesized image, in the scale of ``real`` ([-1, 1]).
        real: (X, Y, Z) real image.
        mask: (X, Y, Z) voxels to count in MAE and PSNR; default :func:`brain_mask` of ``real``. SSIM ignores it:
            its windows need the neighbourhood, and the background's structure (the head's outline) is part of it.
        data_range: maximum minus minimum possible value, 2 for [-1, 1] images.

    Returns:
        ``mae`` (mean absolute error in the mask, in image units), ``psnr`` (10 · log10(data_range² / MSE in the
        mask), in dB; ``inf`` when the images agree exactly in the mask) and ``ssim`` (at most 1, 1 for identical
        images).
    """
    if not data_range > 0:
        raise BrainlearnError(
            f"synthesis_metrics: data_range must be positive (2 for [-1, 1] images), not {data_range}."
        )
    synthesized, real = _image_pair(synthesized, real)
    if mask is None:
        mask = brain_mask(real)
        if not mask.any():
            raise BrainlearnError(
                f"synthesis_metrics: brain_mask(real) is empty: no voxel of the real image is above -0.9 (its maximum "
                f"is {real.max():.3g}). Scale the images to [-1, 1] with background -1, or pass a mask."
            )
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != real.shape:
        raise BrainlearnError(
            f"synthesis_metrics: the mask has shape {mask.shape} but the images {real.shape}; "
            "pass a mask of the images' grid, or none to use brain_mask(real)."
        )
    if not mask.any():
        raise BrainlearnError("synthesis_metrics: the mask passed holds no voxel; pass one that covers the head.")
    error = synthesized[mask] - real[mask]
    mse = float(np.mean(error**2))
    psnr = float(10 * np.log10(data_range**2 / mse)) if mse > 0 else np.inf
    return {"mae": float(np.mean(np.abs(error))), "psnr": psnr, "ssim": ssim_3d(synthesized, real, data_range)}


def ssim_3d(synthesized: np.ndarray, real: np.ndarray, data_range: float) -> float:
    """Mean 3D SSIM of two (X, Y, Z) arrays of the same shape (see :func:`synthesis_metrics`)."""
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    def as_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]  # (1, 1, X, Y, Z)

    window = [min(SSIM_WINDOW, n - (n + 1) % 2) for n in real.shape]  # the largest odd size that fits
    ssim_map, _ = compute_ssim_and_cs(
        as_tensor(synthesized),
        as_tensor(real),
        spatial_dims=3,
        kernel_size=window,
        kernel_sigma=[SSIM_SIGMA] * 3,
        data_range=data_range,
        k1=SSIM_K1,
        k2=SSIM_K2,
    )
    return float(ssim_map.double().mean())


def synthesis_table_metrics(table: pd.DataFrame, *, n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Interval]:
    """Mean MAE, PSNR and SSIM over participants, with percentile bootstrap 95 % intervals over participants.

    Args:
        table: one row per participant with columns ``mae``, ``psnr`` and ``ssim`` (from :func:`synthesis_metrics`).
        n_bootstrap: resamples of the participants.
        seed: seed of the resampling.

    Returns:
        ``{"mae" | "psnr" | "ssim": Interval(mean, lower, upper)}``.
    """
    where = "synthesis_table_metrics"
    missing = [name for name in COLUMNS if name not in table.columns]
    if missing:
        raise BrainlearnError(
            f"{where}: the table lacks column(s) {missing} (it has {list(table.columns)}). "
            "Build it from synthesis_metrics, one row per participant."
        )
    values = np.column_stack([as_vector(table[name], name, where=where) for name in COLUMNS])  # (N, 3)
    return bootstrap(_column_means, values, n_resamples=n_bootstrap, seed=seed, stratify=False)


def _column_means(values: np.ndarray) -> dict[str, float]:
    return dict(zip(COLUMNS, values.mean(axis=0).tolist(), strict=True))


def _image_pair(synthesized: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float arrays of the same 3D shape with finite values; a readable error otherwise."""
    synthesized, real = np.asarray(synthesized, dtype=float), np.asarray(real, dtype=float)
    if synthesized.shape != real.shape or real.ndim != 3:
        raise BrainlearnError(
            f"synthesis_metrics: expected two 3D images (X, Y, Z) of the same shape, got synthesized "
            f"{synthesized.shape} and real {real.shape}. Resample both onto the same grid."
        )
    for name, image in (("synthesized", synthesized), ("real", real)):
        bad = np.count_nonzero(~np.isfinite(image))
        if bad:
            raise BrainlearnError(
                f"synthesis_metrics: the {name} image has {bad} NaN or infinite voxel(s); "
                "check the model output or the preprocessing."
            )
    return synthesized, real
