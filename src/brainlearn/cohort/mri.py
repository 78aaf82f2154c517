"""MR images from tissue fractions: T1-weighted, T2-weighted and FLAIR signal equations, then the scanner.

Each voxel's signal is the sum over tissues (CSF, grey matter, white matter, lesion) of its fraction times the
tissue's signal for the site's sequence parameters (T1, T2, T2* and proton density from ``facts.TISSUES``).
The scanner then adds a smooth multiplicative bias field, blurs to its resolution and adds Rician noise
(the magnitude of complex Gaussian noise). Images are scaled so white matter reads about 1000 and stored
as integers, as scanners do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainlearn.cohort import facts

TISSUE_ORDER = ("csf", "gm", "wm", "lesion")
CONTRASTS = ("t1", "t2", "flair")


@dataclass(frozen=True)
class Site:
    """A scanner and its protocol.

    Attributes:
        tr_ms, te_ms, flip_deg: spoiled gradient-echo T1-weighted sequence.
        t2_tr_ms, t2_te_ms: spin-echo T2-weighted sequence.
        flair_tr_ms, flair_te_ms: FLAIR; its inversion time nulls CSF.
        noise: Rician noise SD as a fraction of the white-matter signal.
        bias: amplitude of the log bias field (0.2 gives about ±20 %).
        fwhm_mm: resolution per axis (x, y, z), as Gaussian blur FWHM; 0 keeps the grid's resolution.
        pet_fwhm_mm: PET scanner resolution.
    """

    tr_ms: float = 20.0
    te_ms: float = 4.0
    flip_deg: float = 25.0
    t2_tr_ms: float = 4000.0
    t2_te_ms: float = 100.0
    flair_tr_ms: float = 9000.0
    flair_te_ms: float = 120.0
    noise: float = 0.03
    bias: float = 0.15
    fwhm_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pet_fwhm_mm: float = 6.0


SITES = {
    "site-A": Site(),
    "site-B": Site(tr_ms=18.0, te_ms=3.5, flip_deg=20.0, noise=0.04, bias=0.2, pet_fwhm_mm=7.0),
    "site-C": Site(tr_ms=24.0, te_ms=4.5, flip_deg=30.0, t2_te_ms=90.0, noise=0.025, bias=0.1, pet_fwhm_mm=6.5),
}
# The held-out site (like AIBL or NACC in document 000): other contrast, more noise, thick slices, blurrier PET.
EXTERNAL_SITE = "site-X"
SITES[EXTERNAL_SITE] = Site(
    tr_ms=12.0,
    te_ms=5.0,
    flip_deg=15.0,
    t2_te_ms=85.0,
    flair_te_ms=100.0,
    noise=0.06,
    bias=0.3,
    fwhm_mm=(1.5, 1.5, 4.0),
    pet_fwhm_mm=8.0,
)


def tissue_signals(site: Site) -> dict[str, np.ndarray]:
    """Signal of each tissue (in ``TISSUE_ORDER``) for each contrast, before scaling."""
    signals = {contrast: [] for contrast in CONTRASTS}
    for tissue in TISSUE_ORDER:
        p = facts.TISSUES[tissue]
        t1, t2, t2s, pd = p["t1_ms"], p["t2_ms"], p["t2s_ms"], p["pd"]
        e1 = np.exp(-site.tr_ms / t1)
        flip = np.deg2rad(site.flip_deg)
        signals["t1"].append(pd * np.sin(flip) * (1 - e1) / (1 - np.cos(flip) * e1) * np.exp(-site.te_ms / t2s))
        signals["t2"].append(pd * (1 - np.exp(-site.t2_tr_ms / t1)) * np.exp(-site.t2_te_ms / t2))
        ti = np.log(2) * facts.TISSUES["csf"]["t1_ms"]  # the inversion time that nulls CSF
        recovery = 1 - 2 * np.exp(-ti / t1) + np.exp(-site.flair_tr_ms / t1)
        signals["flair"].append(pd * abs(recovery) * np.exp(-site.flair_te_ms / t2))
    return {contrast: np.array(values) for contrast, values in signals.items()}


def mr_images(
    fractions: np.ndarray, texture: np.ndarray, site: Site, spacing: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """T1w, T2w and FLAIR images (int16, white matter ≈ 1000) from tissue fractions (4, X, Y, Z).

    Args:
        fractions: CSF, GM, WM, lesion fractions per voxel (``TISSUE_ORDER``), summing to ≤ 1.
        texture: multiplicative fine detail (≈ 1) taken from the real template, so images are not piecewise flat.
        site: the scanner.
        spacing: voxel size in mm.
    """
    signals = tissue_signals(site)
    bias = bias_field(fractions.shape[1:], spacing, site.bias, rng)
    images = {}
    for contrast, per_tissue in signals.items():
        clean = np.tensordot(per_tissue / per_tissue[2], fractions, axes=1) * 1000.0  # white matter = 1000
        detail = texture if contrast == "t1" else np.sqrt(texture)
        image = _blur(clean * detail * bias, site.fwhm_mm, spacing)
        images[contrast] = _quantize(rician(image, site.noise * 1000.0, rng))
    return images


def bias_field(shape, spacing: float, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field exp(amplitude · n): n random on a ~40 mm lattice, trilinear, in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    coarse = rng.standard_normal(tuple(max(2, int(n * spacing / 40)) for n in shape)).astype(np.float32)
    field = F.interpolate(torch.from_numpy(coarse)[None, None], size=tuple(shape), mode="trilinear", align_corners=True)
    field = field[0, 0].numpy()
    field = field / (np.abs(field).max() or 1.0)
    return np.exp(amplitude * field).astype(np.float32)


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of SD ``sigma`` per channel."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    imaginary = rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.hypot(real, imaginary)


def _blur(image: np.ndarray, fwhm_mm, spacing: float) -> np.ndarray:
    sigma = [f / (2.355 * spacing) for f in fwhm_mm]
    return ndimage.gaussian_filter(image, sigma) if any(s > 0.3 for s in sigma) else image


def _quantize(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
