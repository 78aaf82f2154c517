"""Grad-CAM and Grad-CAM++ for 3D networks and for 2D networks run over the axial slices of a volume.

The activations and gradients of the chosen layer come from MONAI's ``ModelWithHooks``. The class-activation
formulas are applied here, after the slice-wise activations of AwareNet or ResNet-50-over-slices, (B·Z, C, h, w),
are put back together as volumes (B, C, h, w, Z): the channel weights are then averaged over the whole volume
(Selvaraju et al. 2017; Chattopadhyay et al. 2018) rather than over each slice alone, which is what a 2D Grad-CAM
applied to the folded batch would do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError
from brainlearn.models.awarenet import AwareNet
from brainlearn.models.backbones import SFCN, DenseNet3d, ResNet3d, ResNet50Slices
from brainlearn.models.networks import logits_of

MIN_LAYER_SIZE = 6  # voxels per axis: the default layer is the deepest whose maps are at least this fine


class OutputOf(nn.Module):
    """``network`` returning its (B, K) output tensor only (AwareNet also returns attention maps)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.network(x))


def candidate_layers(network: nn.Module) -> list[str]:
    """Names of ``network``'s feature stages, deepest first: the layers Grad-CAM is usually taken at."""
    backbone = getattr(network, "backbone", None)
    if isinstance(network, AwareNet):
        return ["layer4", "layer3", "stem"]
    if isinstance(backbone, ResNet3d | ResNet50Slices):
        return [f"backbone.net.layer{i}" for i in (4, 3, 2, 1)]
    if isinstance(backbone, DenseNet3d):
        blocks = [name for name, _ in backbone.net.features.named_children() if name.startswith("denseblock")]
        return [f"backbone.net.features.{name}" for name in reversed(blocks)]
    if isinstance(backbone, SFCN):
        relus = [i for i, layer in enumerate(backbone.features) if isinstance(layer, nn.ReLU)]
        return [f"backbone.features.{i}" for i in reversed(relus)]
    raise BrainlearnError(f"Grad-CAM: no known feature layers in {type(network).__name__}; pass --layer NAME.")


def choose_layer(network: nn.Module, image: Tensor, *, min_size: int = MIN_LAYER_SIZE) -> str:
    """The deepest of :func:`candidate_layers` whose maps have at least ``min_size`` voxels per spatial axis.

    Deep layers explain best but are coarse: at 4 mm an SFCN's last block is 2×2×2. Falls back to the shallowest.
    """
    names = candidate_layers(network)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        _module(network, name).register_forward_hook(lambda _m, _i, out, name=name: shapes.update({name: out.shape}))
        for name in names
    ]
    try:
        with torch.no_grad():
            network.eval()(image[:1])
    finally:
        for hook in hooks:
            hook.remove()
    for name in names:
        if min(shapes[name][2:]) >= min_size:
            return name
    return names[-1]


class GradCAM:
    """Grad-CAM (``plus=False``) or Grad-CAM++ (``plus=True``) of ``network`` at the layer named ``layer``.

    Args:
        network: maps (B, C, X, Y, Z) to (B, K) outputs (or an AwareNet output).
        layer: a module name of ``network`` (see :func:`candidate_layers`, :func:`choose_layer`). Its output is
            either 3D maps (B, C, x, y, z) or 2D maps of the axial slices folded into the batch, (B·Z, C, x, y).
        plus: Grad-CAM++ weights (positive gradients weighted per position) instead of mean gradients.

    Calling it on a batch returns maps (B, X, Y, Z) in [0, 1] (each divided by its maximum), upsampled
    trilinearly to the input's grid. The network is put in eval mode; its in-place activations are switched off
    (MONAI's hooks need that).
    """

    def __init__(self, network: nn.Module, layer: str, *, plus: bool = False):
        from monai.visualize.class_activation_maps import ModelWithHooks

        _module(network, layer)  # an unknown name fails here, with the known ones listed
        self.layer, self.plus = layer, plus
        hooks = {"register_forward": True, "register_backward": True}
        self._hooked = ModelWithHooks(OutputOf(network), f"network.{layer}", **hooks)

    def __call__(self, image: Tensor, target: int | Sequence[int] | None = None) -> Tensor:
        """Maps (B, X, Y, Z) for ``image`` (B, C, X, Y, Z); ``target``: the output index explained, one for all or
        one per volume (None: each volume's largest output, its predicted class)."""
        if image.ndim != 5:
            raise BrainlearnError(f"Grad-CAM: expected a batch (B, C, X, Y, Z), got shape {tuple(image.shape)}.")
        model = self._hooked.model.eval()
        image = image.detach().requires_grad_(True)  # a frozen first layer still passes gradients back
        with torch.enable_grad():
            outputs = model(image)  # (B, K); the hooks keep the layer's output
            score = outputs.gather(1, _target_index(target, outputs)).sum(1)  # (B,)
            model.zero_grad()
            score.sum().backward()  # volumes do not mix in eval mode: each gets its own gradient
        name = self._hooked.target_layers[0]
        activation = _as_volumes(self._hooked.activations[name].detach(), image.shape)
        gradient = _as_volumes(self._hooked.gradients[name], image.shape)
        weights = _plus_weights(activation, gradient) if self.plus else gradient.mean((2, 3, 4))
        cam = F.relu((weights[:, :, None, None, None] * activation).sum(1, keepdim=True))  # (B, 1, x, y, z)
        cam = F.interpolate(cam, size=tuple(image.shape[2:]), mode="trilinear", align_corners=False)[:, 0]
        return cam / cam.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


def _plus_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """Grad-CAM++ channel weights (B, C), Chattopadhyay et al. 2018, eq. 19.

    The paper's exponential of the score multiplies every weight of a volume by one positive number, which the
    division by the map's maximum removes: it is left out (it overflows for a regression output of 90 years).
    """
    squared = gradient.pow(2)
    denominator = 2 * squared + (activation * gradient.pow(3)).sum((2, 3, 4), keepdim=True)
    alpha = squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return (alpha * F.relu(gradient)).sum((2, 3, 4))


def _as_volumes(maps: Tensor, image_shape: Sequence[int]) -> Tensor:
    """Layer maps as volumes (B, C, x, y, Z): 3D maps as they are, slice-folded 2D maps (B·S, C, x, y) restacked.

    A network that keeps only the S central slices of Z (``resnet50_slices`` with ``slices``) gets zeros for the
    slices it did not look at.
    """
    batch, depth = image_shape[0], image_shape[-1]
    if maps.ndim == 5:
        return maps
    if maps.ndim == 4 and maps.shape[0] % batch == 0 and maps.shape[0] // batch <= depth:
        used = maps.shape[0] // batch
        stacked = maps.view(batch, used, *maps.shape[1:]).permute(0, 2, 3, 4, 1)  # (B, C, x, y, S)
        start = (depth - used) // 2  # as ResNet50Slices centres its slices
        return F.pad(stacked, (start, depth - used - start))
    raise BrainlearnError(
        f"Grad-CAM: the layer's output has shape {tuple(maps.shape)}, neither 3D maps (B, C, x, y, z) nor 2D maps "
        f"of the {depth} axial slices of {batch} volumes; choose a convolutional layer."
    )


def _target_index(target, outputs: Tensor) -> Tensor:
    """(B, 1) indices into ``outputs`` (B, K): the largest output (None), one index, or one per volume."""
    batch, k = outputs.shape
    if target is None:
        return outputs.argmax(1, keepdim=True)
    index = torch.as_tensor([target] * batch if isinstance(target, int) else list(target), device=outputs.device)
    if index.shape != (batch,) or int(index.min()) < 0 or int(index.max()) >= k:
        raise BrainlearnError(f"Grad-CAM: target {target} does not pick one of {k} outputs for each of {batch} volumes")
    return index[:, None]


def _module(network: nn.Module, name: str) -> nn.Module:
    modules = dict(network.named_modules())
    if name not in modules or not name:
        import difflib

        close = difflib.get_close_matches(name, list(modules), n=3)
        raise BrainlearnError(
            f"layer {name!r} is not a module of {type(network).__name__}"
            + (f"; did you mean {', '.join(close)}?" if close else ".")
            + " `brainlearn explain` logs the layer it chose by default."
        )
    return modules[name]
