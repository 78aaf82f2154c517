"""Occlusion sensitivity (Zeiler and Fergus 2014): how much the output changes when a cube of the input is hidden.

MONAI's ``OcclusionSensitivity`` slides the cube (its sliding-window inferer, overlapping windows averaged) and
returns the occluded outputs; the map here is their change from the output of the whole image.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError
from brainlearn.explain.gradcam import OutputOf


def occlusion_map(
    network: nn.Module,
    image: Tensor,
    *,
    target: int,
    classifier: bool,
    patch: int = 8,
    overlap: float = 0.5,
    background: float = 0.0,
    batch_size: int = 16,
) -> Tensor:
    """Occlusion sensitivity of output ``target`` for each volume of ``image`` (B, C, X, Y, Z) → (B, X, Y, Z).

    Args:
        network: maps (B, C, X, Y, Z) to (B, K) outputs (or an AwareNet output).
        target: the output explained: a class index, or 0 for a regressor.
        classifier: outputs are logits: the map is the fall of the target's softmax probability when a cube is
            hidden (a rise counts as 0); for a regressor, the absolute change of the output.
        patch: edge of the hidden cube in voxels (on the model's grid).
        overlap: fraction by which neighbouring cubes overlap (0.5: a stride of half a cube).
        background: the value a hidden cube is filled with: the input's background (0 after z-scoring, -1 in
            document 000's [-1, 1] range), so hiding looks like missing tissue rather than a new intensity.
        batch_size: occluded copies per forward pass.

    Returns:
        Maps (B, X, Y, Z) in [0, 1], each divided by its maximum (all zeros where nothing changes the output).
    """
    from monai.visualize import OcclusionSensitivity

    if image.ndim != 5:
        raise BrainlearnError(f"occlusion: expected a batch (B, C, X, Y, Z), got shape {tuple(image.shape)}.")
    if not isinstance(patch, int) or patch < 1 or patch > min(image.shape[2:]):
        raise BrainlearnError(f"occlusion: patch must be 1 to {min(image.shape[2:])} voxels, not {patch!r}.")
    if not 0 <= overlap < 1:
        raise BrainlearnError(f"occlusion: overlap must be in [0, 1), not {overlap!r}.")
    model = OutputOf(network).eval()
    activate = (lambda out: out.softmax(1)) if classifier else (lambda out: out)
    occlusion = OcclusionSensitivity(
        model,
        mask_size=patch,
        n_batch=batch_size,
        verbose=False,
        mode=float(background),
        overlap=overlap,
        activate=activate,
    )
    maps = []
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.x indexes with lists of slices, which torch warns about on every window; the result is right
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        for volume in image.split(1):  # MONAI occludes one image at a time
            whole = activate(model(volume))[0, target]
            occluded = occlusion(volume)[0][0, target]  # (X, Y, Z): the target's output with each cube hidden
            change = (whole - occluded).clamp_min(0) if classifier else (whole - occluded).abs()
            maps.append(change / change.max().clamp_min(1e-12))
    return torch.stack(maps).float().as_subclass(Tensor)
