"""A network by name: AwareNet, or any registered backbone with a linear head. The one place names become modules.

Every network built here maps ``image`` (B, C, X, Y, Z) to an output whose :func:`logits_of` is (B, K): class
logits for a classifier, K = 1 for a regressor such as brain age.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import Tensor, nn

from brainlearn.errors import BrainlearnError
from brainlearn.models.awarenet import AwareNet, AwareNetOutput
from brainlearn.models.backbones import BACKBONES, LinearHead, create_backbone, init_kaiming

NETWORKS = ("awarenet", *BACKBONES)


class BackboneWithHead(nn.Module):
    """A backbone (B, C, X, Y, Z) → (B, F) followed by a separate linear head (B, F) → (B, K)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def build_network(
    name: str, *, in_channels: int, outputs: int, options: dict[str, Any] | None = None, dropout: float = 0.0
) -> nn.Module:
    """The network ``name`` for ``in_channels`` input channels and ``outputs`` outputs, Kaiming-initialized.

    Args:
        name: ``"awarenet"`` or a backbone of :data:`brainlearn.models.backbones.BACKBONES`.
        in_channels: image channels (1 for T1 alone, 2 for T1 and PET).
        outputs: classes for a classifier, 1 for a regressor.
        options: keyword arguments of the backbone (e.g. ``{"channels": [8, 16, 32, 64, 64, 32]}`` for a small
            SFCN); AwareNet takes ``width``, ``dropout`` and ``checkpointing``.
        dropout: dropout before the linear head of a backbone.

    Raises:
        BrainlearnError: an unknown name (with the closest known one) or options the network does not take.
    """
    options = dict(options or {})
    if name not in NETWORKS:
        close = difflib.get_close_matches(name, NETWORKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BrainlearnError(f"model: unknown network {name!r}.{hint} Known networks: {', '.join(NETWORKS)}.")
    try:
        if name == "awarenet":
            return AwareNet(in_channels, outputs, **options)  # initializes itself (Kaiming, document 000)
        backbone = create_backbone(name, in_channels, **options)
    except TypeError as error:
        raise BrainlearnError(f"model_options: {name} does not take these options {options} ({error}).") from error
    # The head keeps PyTorch's default initialization (see LinearHead); everything before it is Kaiming.
    return BackboneWithHead(init_kaiming(backbone), LinearHead(backbone.num_features, outputs, dropout))


def logits_of(output: Tensor | AwareNetOutput) -> Tensor:
    """The (B, K) tensor of a network's output (AwareNet also returns its attention maps)."""
    return output.logits if isinstance(output, AwareNetOutput) else output
