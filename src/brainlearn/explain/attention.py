"""AwareNet's own attention (document 000) written as volumes: the slice weights and the local maps they scale."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError
from brainlearn.models.awarenet import AwareNet, local_attention_volume


def attention_maps(network: nn.Module, image: Tensor) -> dict[str, Tensor]:
    """AwareNet's attention for ``image`` (B, C, X, Y, Z), on the input's grid.

    Returns:
        ``attention``: local attention × slice weight (B, X, Y, Z), upsampled trilinearly, each volume divided by
        its maximum; ``sliceattention``: each axial slice filled with its weight (B, X, Y, Z), the weights of a
        volume summing to 1 over its slices.

    Raises:
        BrainlearnError: ``network`` is not an AwareNet (other networks have no attention of their own; use
            Grad-CAM, occlusion or the noise model).
    """
    require_awarenet(network)
    with torch.no_grad():
        output = network.eval()(image)
    combined = local_attention_volume(output, image.shape[2:])
    combined = combined / combined.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    slices = output.slice_attention[:, None, None, :].expand(-1, *image.shape[2:])  # (B, X, Y, Z)
    return {"attention": combined, "sliceattention": slices.contiguous()}


def require_awarenet(network: nn.Module) -> None:
    """Raise a :class:`BrainlearnError` unless ``network`` is an AwareNet, the one network with its own attention."""
    if not isinstance(network, AwareNet):
        raise BrainlearnError(
            f"attention maps are AwareNet's own; this run's network is a {type(network).__name__}. "
            "Use explain gradcam, occlusion or noise for it."
        )
