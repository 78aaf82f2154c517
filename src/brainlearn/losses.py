"""Losses that no library ships: the TSAN pairwise ranking loss and the brain-age loss built on it."""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import Tensor

from brainlearn.errors import BrainlearnError

BRAIN_AGE_LOSSES = ("mse", "l1", "mse+ranking", "l1+ranking")


def ranking_loss(predicted: Tensor, target: Tensor, *, margin: float = 0.0) -> Tensor:
    """Pairwise ranking loss in the spirit of TSAN (Cheng et al. 2021): penalize predictions in the wrong order.

    For every ordered pair (i, j) in the batch with ``target[i] != target[j]``, with ``s = sign(t_i − t_j)``:
    ``relu(margin − s · (p_i − p_j))``; the loss is the mean over those pairs. With ``margin = 0`` a pair costs
    nothing once its predictions are in the targets' order; with ``margin > 0`` they must also be at least
    ``margin`` apart (in the prediction's units, years for brain age). Pairs (i, j) and (j, i) cost the same,
    so this equals the mean over unordered pairs.

    The value depends on the batch composition: which pairs exist, and how many, change with the batch size and
    sampling (the caveat about TSAN in ``anchors.md``); compare runs only at the same batch size.

    Args:
        predicted: predictions (B,) or (B, 1).
        target: targets (B,) or (B, 1).
        margin: the gap required between predictions of differently ranked targets; not negative.

    Returns:
        Scalar tensor. Zero, still attached to the graph, when the batch has fewer than two distinct targets.
    """
    predicted, target = _as_vectors(predicted, target, "ranking_loss")
    if margin < 0:
        raise BrainlearnError(f"ranking_loss: margin must not be negative, got {margin}.")
    order = torch.sign(target[:, None] - target[None, :])  # (B, B): +1, -1, or 0 for ties and the diagonal
    difference = predicted[:, None] - predicted[None, :]  # (B, B)
    ranked = order != 0
    if not ranked.any():
        return predicted.sum() * 0.0
    cost = F.relu(margin - order * difference)
    return cost[ranked].mean()


def brain_age_loss(name: str, predicted: Tensor, target: Tensor, *, ranking_weight: float = 1.0) -> Tensor:
    """The brain-age regression loss ``name``, one of :data:`BRAIN_AGE_LOSSES`.

    ``"mse"`` and ``"l1"`` are the mean squared and absolute errors; ``"+ranking"`` adds
    ``ranking_weight ·`` :func:`ranking_loss` (TSAN's combination).

    Args:
        name: the loss, e.g. ``"l1+ranking"``.
        predicted: predicted ages (B,) or (B, 1).
        target: true ages (B,) or (B, 1).
        ranking_weight: factor on the ranking term; not negative.

    Returns:
        Scalar tensor.
    """
    if name not in BRAIN_AGE_LOSSES:
        close = difflib.get_close_matches(name, BRAIN_AGE_LOSSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BrainlearnError(f"Unknown brain-age loss {name!r}{hint}. Choose one of: {', '.join(BRAIN_AGE_LOSSES)}.")
    if ranking_weight < 0:
        raise BrainlearnError(f"brain_age_loss: ranking_weight must not be negative, got {ranking_weight}.")
    predicted, target = _as_vectors(predicted, target, "brain_age_loss")
    base, _, ranking = name.partition("+")
    loss = F.mse_loss(predicted, target) if base == "mse" else F.l1_loss(predicted, target)
    if ranking:
        loss = loss + ranking_weight * ranking_loss(predicted, target)
    return loss


def _as_vectors(predicted: Tensor, target: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """Flatten (B,) or (B, 1) predictions and targets to (B,), checking they match."""
    shapes = (tuple(predicted.shape), tuple(target.shape))
    if predicted.ndim == 2 and predicted.shape[1] == 1:
        predicted = predicted[:, 0]
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if predicted.ndim != 1 or predicted.shape != target.shape:
        raise BrainlearnError(
            f"{where}: expected predictions and targets of the same shape (B,) or (B, 1), got {shapes[0]} and "
            f"{shapes[1]}. Flatten the regression output to one value per image."
        )
    return predicted, target.to(predicted.dtype)


SEGMENTATION_LOSSES = ("bce", "dice", "combo")


def segmentation_loss(name: str, logits: Tensor, target: Tensor, *, pos_weight: float = 1.0) -> Tensor:
    """Binary lesion-segmentation loss on logits (B, 1, ...) against a 0/1 target of the same shape.

    - ``"bce"``: binary cross-entropy, the positive voxels weighted by ``pos_weight`` (lesions are often well
      under 1 % of the voxels; document 002 used plain BCE);
    - ``"dice"``: soft Dice loss over the whole batch (one overlap for all images, so a batch whose slices hold no
      lesion still gives a defined, small loss when the prediction is empty too);
    - ``"combo"``: their sum, the usual answer to class imbalance.
    """
    if name not in SEGMENTATION_LOSSES:
        close = difflib.get_close_matches(name, SEGMENTATION_LOSSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BrainlearnError(
            f"Unknown segmentation loss {name!r}{hint}. Choose one of: {', '.join(SEGMENTATION_LOSSES)}."
        )
    if logits.shape != target.shape:
        raise BrainlearnError(
            f"segmentation_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ."
        )
    target = target.to(logits.dtype)
    loss = logits.new_zeros(())
    if name in ("bce", "combo"):
        weight = torch.as_tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
        loss = loss + F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    if name in ("dice", "combo"):
        probabilities = torch.sigmoid(logits)
        overlap = (probabilities * target).sum()
        loss = loss + 1 - (2 * overlap + 1.0) / (probabilities.sum() + target.sum() + 1.0)
    return loss
