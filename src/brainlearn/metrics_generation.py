"""How close generated volumes (e.g. document 003's latent diffusion samples) are to real ones, and how varied.

Fidelity and coverage are measured on features of a backbone (:func:`volume_features`): the Fréchet distance
between Gaussians fitted to the real and generated features (Heusel et al. 2017) and improved precision and recall
(Kynkäänniemi et al. 2019), which separate "generated volumes look real" (precision) from "the real variety is
generated" (recall, low under mode collapse). Diversity is measured on the volumes themselves: the mean MS-SSIM over
all pairs of generated volumes, lower for more varied samples, as document 003 reports it::

    real = volume_features(backbone, real_volumes)  # (N, F)
    fake = volume_features(backbone, sampler_batches)  # (M, F)
    generation_scores(real, fake)  # {"frechet_distance": ..., "precision": ..., "recall": ...}
    ms_ssim_diversity(generated_volumes)  # in [0, 1], 1 when every sample is the same volume

The numbers depend on the backbone: compare models only with features of the same backbone and weights.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

# Heusel et al.'s reference code: the identity times this is added to both covariances when their product is singular.
FRECHET_EPSILON = 1e-6
# Wang et al., "Multiscale structural similarity for image quality assessment" (2003): weights, finest scale first.
# Window and scales as brainlearn.methods.inpainting.ms_ssim (document 003): 5 voxels (σ 1 voxel), at most 3 scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL, MS_SSIM_MAX_SCALES = 5, 3


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, "FID" with any features).

    FD = ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½), with sample means and covariances (divisor n − 1) and the
    principal square root of scipy.linalg.sqrtm. Round-off gives the square root a negligible imaginary part, which
    is discarded. When the product is so singular that the square root is not finite (e.g. a feature constant in
    both sets), 1e-6 times the identity is added to both covariances, as in Heusel et al.'s reference code, and a
    warning is logged. Fewer samples than features make the covariances singular and the distance biased upwards;
    use the same number of samples when comparing models.

    Args:
        real: (N, F) features of real volumes, N ≥ 2.
        fake: (M, F) features of generated volumes, M ≥ 2.

    Returns:
        The distance, ≥ 0, in squared feature units; 0 for identical sets.
    """
    real, fake = _feature_sets(real, fake, min_samples=2, where="frechet_distance")
    mean_r, mean_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r, cov_f = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))  # (F, F)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular matrices; a non-finite result is handled below
        root = sqrtm(cov_r @ cov_f)
        if not np.isfinite(root).all():
            log.warning("frechet_distance: singular covariance product; adding %g to their diagonals", FRECHET_EPSILON)
            offset = FRECHET_EPSILON * np.eye(len(cov_r))
            root = sqrtm((cov_r + offset) @ (cov_f + offset))
    trace_root = np.trace(root)
    if abs(np.imag(trace_root)) > 1e-3 * max(1.0, abs(np.real(trace_root))):
        raise BrainlearnError(
            f"frechet_distance: the square root of the covariance product has a large imaginary trace "
            f"({np.imag(trace_root):.3g}), a numerical failure. Use more samples than features ({real.shape[1]}) "
            "or features of a lower dimension."
        )
    distance = np.sum((mean_r - mean_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2 * np.real(trace_root)
    return max(float(distance), 0.0)  # round-off can put identical sets a hair below 0


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> dict[str, float]:
    """Improved precision and recall of Kynkäänniemi et al. (2019) in feature space.

    Each set's manifold is the union of balls around its samples, each of radius the Euclidean distance to the
    sample's k-th nearest neighbour in the same set (itself excluded). A sample lies inside a manifold when it is
    within (≤) the radius of at least one of the manifold's samples.

    Args:
        real: (N, F) features of real volumes, N > k.
        fake: (M, F) features of generated volumes, M > k.
        k: neighbour that sets the radii (the paper's default: 3).

    Returns:
        ``precision``: share of the generated samples inside the real manifold (fidelity); ``recall``: share of the
        real samples inside the generated manifold (coverage; about 0.5 when half of the real modes are missing).
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise BrainlearnError(f"precision_recall: k must be a positive number of neighbours (e.g. 3), not {k!r}.")
    real, fake = _feature_sets(real, fake, min_samples=k + 1, where=f"precision_recall with k = {k}")
    real_radii, fake_radii = _kth_neighbour_distance(real, k), _kth_neighbour_distance(fake, k)
    precision = _inside(fake, real, real_radii).mean()
    recall = _inside(real, fake, fake_radii).mean()
    return {"precision": float(precision), "recall": float(recall)}


def generation_scores(real_features: np.ndarray, fake_features: np.ndarray, *, k: int = 3) -> dict[str, float]:
    """:func:`frechet_distance` and :func:`precision_recall` of two (N, F) and (M, F) feature sets.

    Returns:
        ``{"frechet_distance": ..., "precision": ..., "recall": ...}``.
    """
    scores = {"frechet_distance": frechet_distance(real_features, fake_features)}
    return scores | precision_recall(real_features, fake_features, k=k)


def ms_ssim_diversity(volumes: Tensor | np.ndarray, *, data_range: float = 2.0) -> float:
    """Mean MS-SSIM over all pairs of volumes: lower for more varied samples (document 003).

    MS-SSIM is MONAI's, with the window of :func:`brainlearn.methods.inpainting.ms_ssim` (5 voxels, σ = 1 voxel) and
    up to 3 scales, each half the previous one, weighted by Wang et al.'s first weights renormalized to sum 1. Small
    volumes get fewer scales: as many as keep the window inside the coarsest scale along the shortest axis (3 scales
    from 20 voxels, 2 from 10, 1 from 5). Unlike that function, the constants use the fixed ``data_range`` rather
    than each image's own range, so every pair is scored on the same scale.

    Args:
        volumes: (N, C, X, Y, Z) volumes, N ≥ 2, in the scale of ``data_range`` ([-1, 1] for generated volumes).
        data_range: maximum minus minimum possible value, 2 for [-1, 1] volumes.

    Returns:
        The mean over the N (N − 1) / 2 pairs, in [0, 1]; 1 when all volumes are the same.
    """
    volumes = _volume_stack(volumes, data_range)
    from monai.metrics.regression import compute_ms_ssim

    scales = _ms_ssim_scales(volumes.shape[2:])
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    first, second = torch.triu_indices(len(volumes), len(volumes), offset=1)  # every pair once, (P,) each
    values = []
    for start in range(0, len(first), 8):  # 8 pairs at a time bound the memory
        i, j = first[start : start + 8], second[start : start + 8]
        value = compute_ms_ssim(
            volumes[i], volumes[j], spatial_dims=3, data_range=data_range, kernel_size=MS_SSIM_KERNEL,
            kernel_sigma=1.0, weights=weights.tolist(),
        )  # fmt: skip
        values.append(value[:, 0].double())  # (pairs,)
    return float(torch.cat(values).mean())


def volume_features(backbone: nn.Module, volumes: Tensor | Iterable[Tensor], *, batch_size: int = 4) -> np.ndarray:
    """Features of volumes from a backbone's ``forward_features`` (the brainlearn backbone contract).

    The backbone runs in eval mode (dropout off, batch norm on its running statistics) under ``torch.no_grad``, on
    the device and floating dtype of its parameters; each module's training mode is restored afterwards.

    Args:
        backbone: maps (B, C, X, Y, Z) to (B, F) with ``forward_features``.
        volumes: one (N, C, X, Y, Z) tensor, or an iterable of volumes (C, X, Y, Z) and/or batches (B, C, X, Y, Z),
            e.g. a sampler's outputs; they are regrouped into batches of ``batch_size``.
        batch_size: volumes per forward pass.

    Returns:
        (N, F) float64 features, in the order of the volumes.
    """
    if not callable(getattr(backbone, "forward_features", None)):
        raise BrainlearnError(
            f"volume_features: {type(backbone).__name__} has no forward_features; pass a backbone of "
            "brainlearn.models.backbones (create_backbone) or a module mapping (B, C, X, Y, Z) to (B, F) with it."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BrainlearnError(f"volume_features: batch_size must be a positive number of volumes, not {batch_size!r}.")
    parameter = next((p for p in backbone.parameters() if p.is_floating_point()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    modes = {module: module.training for module in backbone.modules()}
    features = []
    try:
        backbone.eval()
        with torch.no_grad():
            for batch in _batches(volumes, batch_size):
                output = backbone.forward_features(batch.to(device=device, dtype=dtype))
                if output.ndim != 2 or len(output) != len(batch):
                    raise BrainlearnError(
                        f"volume_features: forward_features mapped a batch {tuple(batch.shape)} to "
                        f"{tuple(output.shape)}; expected ({len(batch)}, F). Pool the backbone's maps to vectors."
                    )
                features.append(output.double().cpu().numpy())
    finally:
        for module, training in modes.items():
            module.train(training)
    if not features:
        raise BrainlearnError("volume_features: no volume was given; pass (N, C, X, Y, Z) volumes with N ≥ 1.")
    return np.concatenate(features)  # (N, F)


def _batches(volumes: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    """(B, C, X, Y, Z) batches of at most ``batch_size`` from a tensor (N, C, X, Y, Z) or an iterable of tensors."""
    pending: list[Tensor] = []
    for item in [volumes] if isinstance(volumes, Tensor) else volumes:
        item = torch.as_tensor(item)
        if item.ndim not in (4, 5) or (isinstance(volumes, Tensor) and item.ndim != 5):
            expected = "(N, C, X, Y, Z)" if isinstance(volumes, Tensor) else "(C, X, Y, Z) or (B, C, X, Y, Z)"
            raise BrainlearnError(
                f"volume_features: expected volumes {expected}, got shape {tuple(item.shape)}. "
                "Add the channel axis (volume[None]) to a 3D image."
            )
        pending.extend(item.unbind(0) if item.ndim == 5 else [item])
        while len(pending) >= batch_size:
            yield _stack(pending[:batch_size])
            pending = pending[batch_size:]
    if pending:
        yield _stack(pending)


def _stack(volumes: list[Tensor]) -> Tensor:
    shapes = {tuple(volume.shape) for volume in volumes}
    if len(shapes) > 1:
        raise BrainlearnError(
            f"volume_features: volumes of different shapes {sorted(shapes)} fall in one batch; "
            "resample them onto one grid (or pass batch_size=1)."
        )
    return torch.stack(volumes)  # (B, C, X, Y, Z)


def _feature_sets(real: np.ndarray, fake: np.ndarray, *, min_samples: int, where: str) -> tuple[np.ndarray, ...]:
    """Both sets as finite float64 (N, F) and (M, F) arrays with at least ``min_samples`` rows; an error otherwise."""
    sets = {"real": np.asarray(real, dtype=float), "fake": np.asarray(fake, dtype=float)}
    for name, features in sets.items():
        if features.ndim != 2:
            raise BrainlearnError(
                f"{where}: expected {name} features (samples, features), got shape {features.shape}. "
                "Use volume_features, or reshape one feature per sample to (N, 1)."
            )
        if len(features) < min_samples:
            raise BrainlearnError(
                f"{where}: needs at least {min_samples} {name} samples, got {len(features)}. "
                "Extract features of more volumes."
            )
        bad = np.count_nonzero(~np.isfinite(features))
        if bad:
            raise BrainlearnError(f"{where}: the {name} features hold {bad} NaN or infinite value(s); check the model.")
    if sets["real"].shape[1] != sets["fake"].shape[1]:
        raise BrainlearnError(
            f"{where}: real features have {sets['real'].shape[1]} dimensions but fake ones "
            f"{sets['fake'].shape[1]}; extract both with the same backbone."
        )
    return sets["real"], sets["fake"]


def _kth_neighbour_distance(features: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance of each sample to its k-th nearest neighbour in the set, itself excluded."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)  # (N, k + 1), sorted
    return distances[:, k]  # column 0 is the sample itself (or an exact duplicate: also distance 0)


def _inside(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(Q,) whether each query lies in at least one ball (centre, radius); 1,024 queries at a time bound memory."""
    chunks = (queries[start : start + 1024] for start in range(0, len(queries), 1024))
    return np.concatenate([(cdist(chunk, centres) <= radii).any(axis=1) for chunk in chunks])


def _volume_stack(volumes: Tensor | np.ndarray, data_range: float) -> Tensor:
    """Finite float32 volumes (N, C, X, Y, Z) with N ≥ 2; a readable error otherwise."""
    if not data_range > 0:
        raise BrainlearnError(
            f"ms_ssim_diversity: data_range must be positive (2 for [-1, 1] volumes), not {data_range}."
        )
    volumes = torch.as_tensor(volumes).float()
    if volumes.ndim != 5:
        raise BrainlearnError(
            f"ms_ssim_diversity: expected volumes (N, C, X, Y, Z), got shape {tuple(volumes.shape)}. "
            "Stack the generated volumes with their channel axis."
        )
    if len(volumes) < 2:
        raise BrainlearnError(
            f"ms_ssim_diversity: needs at least 2 volumes to compare, got {len(volumes)}. Generate more samples."
        )
    if not torch.isfinite(volumes).all():
        raise BrainlearnError("ms_ssim_diversity: the volumes hold NaN or infinite voxels; check the model output.")
    return volumes


def _ms_ssim_scales(shape: tuple[int, ...]) -> int:
    """Most scales (≤ 3) whose coarsest level, shortest axis // 2^(scales − 1), still holds the 5-voxel window."""
    for scales in range(MS_SSIM_MAX_SCALES, 0, -1):
        if min(shape) // 2 ** (scales - 1) >= MS_SSIM_KERNEL:
            return scales
    raise BrainlearnError(
        f"ms_ssim_diversity: volumes {tuple(shape)} are too small for MS-SSIM, whose {MS_SSIM_KERNEL}-voxel window "
        f"needs every axis to have at least {MS_SSIM_KERNEL} voxels. Compare larger volumes."
    )
