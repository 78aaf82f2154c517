"""Smooth invertible deformations with a prescribed local volume change.

A subject is the template pulled back through a diffeomorphism φ = exp(v) of a stationary velocity field v
(scaling and squaring): ``subject(x) = template(φ(x))``. Two kinds of velocity are added:

- shape variability: ``v = curl A`` of a smoothed random vector potential A. Its divergence is zero, so it
  changes shapes but not local volumes (det Dφ = 1 for the continuous flow).
- volume change (atrophy, ventricle growth): ``v = ∇ψ`` with ``Δψ = s`` solved by FFT. Along the flow,
  d log det Dφ / dt = div v = s, so a region's volume in subject space scales by about exp(−s). A source
  ``s = −log f`` inside a region therefore gives it the volume fraction f; the opposite source is placed in
  a sink (outside the brain) so the total volume is kept.

All fields live on a coarse grid (deformations are smooth; this keeps a subject under a second at 2 mm) and
are interpolated to the image grid. Displacements are in voxels of the grid they are defined on.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def divergence_free_velocity(
    shape: tuple[int, int, int], spacing: float, rng: np.random.Generator, *, sigma_mm: float, amplitude_mm: float
) -> np.ndarray:
    """A random smooth velocity with zero divergence, (3, X, Y, Z) in voxels, RMS ≈ ``amplitude_mm``."""
    sigma = sigma_mm / spacing
    potential = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)])
    velocity = _curl(potential)
    rms = float(np.sqrt(np.mean(np.sum(velocity**2, axis=0)))) or 1.0
    return (velocity * (amplitude_mm / spacing / rms)).astype(np.float32)


def volume_change_velocity(source: np.ndarray) -> np.ndarray:
    """The gradient field v = ∇ψ with Δψ = ``source`` (voxel units), (3, X, Y, Z).

    ``source`` must sum to zero (put the compensation in a sink); the mean is removed to be safe.
    """
    source = source - source.mean()
    freqs = [np.fft.fftfreq(n) for n in source.shape]
    k = np.meshgrid(*freqs, indexing="ij", sparse=True)
    # eigenvalues of the 7-point discrete Laplacian on a periodic grid
    laplacian = sum(2.0 * np.cos(2 * np.pi * kd) - 2.0 for kd in k)
    laplacian[0, 0, 0] = 1.0
    psi_hat = np.fft.fftn(source) / laplacian
    psi_hat[0, 0, 0] = 0.0
    # spectral forward-difference gradient, the adjoint of the Laplacian's divergence
    velocity = [np.real(np.fft.ifftn(psi_hat * (np.exp(2j * np.pi * kd) - 1.0))) for kd in k]
    return np.stack(velocity).astype(np.float32)


def exponentiate(velocity: np.ndarray, steps: int = 7) -> np.ndarray:
    """Displacement u of φ = exp(v) by scaling and squaring: φ(x) = x + u(x), (3, X, Y, Z) voxels."""
    u = torch.from_numpy(np.ascontiguousarray(velocity, dtype=np.float32))[None] / (2**steps)
    for _ in range(steps):
        u = u + _sample(u, u)  # φ∘φ: u(x) + u(x + u(x))
    return u[0].numpy()


def jacobian_determinant(displacement: np.ndarray) -> np.ndarray:
    """det(I + ∇u) per voxel (central differences), shape (X, Y, Z)."""
    grads = [np.gradient(displacement[i]) for i in range(3)]  # grads[i][j] = ∂u_i/∂x_j
    jac = np.empty(displacement.shape[1:] + (3, 3), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            jac[..., i, j] = grads[i][j] + (1.0 if i == j else 0.0)
    return np.linalg.det(jac)


def compose_on_grid(
    displacement: np.ndarray,
    coarse_affine: np.ndarray,
    fine_affine: np.ndarray,
    shape: tuple[int, int, int],
    world: np.ndarray | None = None,
) -> np.ndarray:
    """The fine-grid displacement of x ↦ φ(T(x)): first the world transform T, then the coarse deformation φ.

    Args:
        displacement: φ on the coarse grid, (3, X', Y', Z') in coarse voxels.
        coarse_affine, fine_affine: voxel-to-world matrices of the two grids (same world space).
        shape: the fine grid's shape.
        world: a 4×4 world-to-world transform T applied first (e.g. a head-size scaling); identity if None.

    Returns:
        d (3, X, Y, Z) in fine voxels with x + d(x) = the fine voxel of φ(T(x)).
    """
    world = np.eye(4) if world is None else world
    to_coarse = np.linalg.inv(coarse_affine) @ world @ fine_affine  # fine voxel -> coarse voxel of T(x)
    fine = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    coarse = np.einsum("ij,j...->i...", to_coarse[:3, :3], fine) + to_coarse[:3, 3].reshape(3, 1, 1, 1)
    coarse = coarse.astype(np.float32)
    sampled = _sample(
        torch.from_numpy(np.ascontiguousarray(displacement))[None], torch.from_numpy(coarse)[None], absolute=True
    )[0].numpy()
    back = np.linalg.inv(fine_affine) @ coarse_affine  # coarse voxel -> fine voxel
    target = np.einsum("ij,j...->i...", back[:3, :3], coarse + sampled) + back[:3, 3].reshape(3, 1, 1, 1)
    return (target - fine).astype(np.float32)


def warp(volumes: np.ndarray, displacement: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """Pull back (C, X, Y, Z) ``volumes`` through x ↦ x + u(x): out(x) = volume(x + u(x)); zero outside."""
    source = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    u = torch.from_numpy(np.ascontiguousarray(displacement, dtype=np.float32))[None]
    return _sample(source, u, mode="nearest" if nearest else "bilinear", padding="zeros")[0].numpy()


def _sample(field: torch.Tensor, u: torch.Tensor, *, absolute=False, mode="bilinear", padding="border"):
    """``field`` (1, C, X, Y, Z) sampled at x + u(x) (or at u when ``absolute``), u (1, 3, X', Y', Z') voxels."""
    size = field.shape[2:]
    coords = u if absolute else u + _identity(u.shape[2:])
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in size]).view(1, 3, 1, 1, 1)
    grid = (coords * scale - 1.0).permute(0, 2, 3, 4, 1).flip(-1)  # grid_sample wants (z, y, x) order last
    return F.grid_sample(field, grid, mode=mode, padding_mode=padding, align_corners=True)


def _identity(shape) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def _curl(a: np.ndarray) -> np.ndarray:
    d = [[np.gradient(a[i], axis=j) for j in range(3)] for i in range(3)]  # d[i][j] = ∂a_i/∂x_j
    return np.stack([d[2][1] - d[1][2], d[0][2] - d[2][0], d[1][0] - d[0][1]])
