"""SimCLR self-supervised pretraining (Chen et al. 2020, ICML) with the SAM optimizer, as in document 001.

Two random views of every image go through the backbone and a projection head; the NT-Xent loss pulls the two
projections of one image together and pushes those of the other images in the batch apart. Document 001 trained
with SGD (lr 1e-2, momentum 0.9) under SAM; :class:`SimCLRModule` does the same through manual optimization (see
:mod:`brainlearn.optim` for the recipe). The backbone is kept as ``self.backbone``, so its weights are
``backbone.<name>`` in the checkpoint; :func:`export_backbone` strips that prefix for a downstream
``BackboneWithHead.backbone``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from brainlearn.checkpoints import load_checkpoint
from brainlearn.data.augment import (
    Affine,
    Compose,
    RandomBiasField,
    RandomBlur,
    RandomFlip,
    RandomGamma,
    RandomNoise,
    RandomTransform,
    spatial_shape,
)
from brainlearn.errors import BrainlearnError
from brainlearn.optim import SAM, frozen_norm_stats

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}

# ---------------------------------------------------------------------------------------------------------- loss


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1).

    Each of the 2B projections is an anchor; its positive is the other view of the same image, its negatives the
    other 2B − 2 projections. Similarities are cosines divided by ``temperature``.

    Args:
        z1: projections of the first views (B, D).
        z2: projections of the second views (B, D), row i being the same image as row i of ``z1``.
        temperature: τ > 0; smaller values weigh hard negatives more.

    Returns:
        The mean cross-entropy over the 2B anchors, a 0-d tensor.

    Raises:
        BrainlearnError: shapes differ or are not (B, D), B < 2, or ``temperature`` is not positive.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise BrainlearnError(f"nt_xent: z1 and z2 must both be (B, D), not {tuple(z1.shape)} and {tuple(z2.shape)}.")
    if len(z1) < 2:
        raise BrainlearnError(
            f"nt_xent: a batch must hold at least 2 images (B >= 2) to have negatives, not {len(z1)}."
        )
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise BrainlearnError(f"nt_xent: temperature must be a number > 0, not {temperature!r}.")
    b = len(z1)
    z = F.normalize(torch.cat([z1, z2]).to(torch.promote_types(z1.dtype, torch.float32)), dim=1)  # (2B, D)
    similarity = z @ z.T / temperature  # (2B, 2B)
    self_pairs = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(self_pairs, float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)  # anchor i ↔ i ± B
    return F.cross_entropy(similarity, positives)


class ProjectionHead(nn.Module):
    """SimCLR's projection MLP: Linear, BatchNorm, ReLU, Linear; features (B, in_features) → (B, out).

    Args:
        in_features: the backbone's ``num_features``.
        hidden: width of the hidden layer.
        out: size of the projection the loss sees.
    """

    def __init__(self, in_features: int, hidden: int = 512, out: int = 128) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("out", out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BrainlearnError(f"ProjectionHead: {name} must be a positive integer, not {value!r}.")
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
        )

    def forward(self, features: Tensor) -> Tensor:
        """Project features (B, in_features) to (B, out)."""
        return self.net(features)


# --------------------------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class IntensityScaleShift:
    """Foreground voxels v → ``scale`` · v + ``shift``; the background (0) stays 0. ``shift`` is in image units."""

    scale: float
    shift: float

    def __call__(self, item: dict) -> dict:
        spatial_shape(item)
        image = item["image"]
        return {**item, "image": torch.where(image != 0, image * self.scale + self.shift, image)}


class RandomIntensityScaleShift(RandomTransform):
    """SimCLR's colour jitter for MRI: a random contrast (``scale``) and brightness (``shift``) of the foreground."""

    def __init__(
        self,
        scale: tuple[float, float] = (0.8, 1.2),
        shift: tuple[float, float] = (-0.2, 0.2),
        *,
        p: float = 0.8,
        seed: int | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.scale, self.shift = _check_pair("scale", scale, 0.0), _check_pair("shift", shift, float("-inf"))

    def _draw(self, shape: tuple[int, ...]) -> IntensityScaleShift:
        return IntensityScaleShift(self._uniform(1, *self.scale).item(), self._uniform(1, *self.shift).item())


class RandomCropResize(RandomTransform):
    """Crop a random box and resize it back to the full size (SimCLR's random resized crop), as one affine resampling.

    The box keeps the image's aspect ratio; its side is a fraction uniform in ``crop`` of the image's, placed
    uniformly inside the image, and turned by up to ``degrees`` in each rotation plane.
    """

    def __init__(
        self, crop: tuple[float, float] = (0.7, 1.0), degrees: float = 10.0, *, p: float = 1.0, seed: int | None = None
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.crop = _check_pair("crop", crop, 0.0)
        if self.crop[1] > 1:
            raise BrainlearnError(f"crop must be fractions of the side in (0, 1], not {crop!r}.")
        if isinstance(degrees, bool) or not isinstance(degrees, int | float) or not 0 <= degrees <= 180:
            raise BrainlearnError(f"degrees must be a number in [0, 180], not {degrees!r}.")
        self.degrees = float(degrees)

    def _draw(self, shape: tuple[int, ...]) -> Affine:
        zoom = 1.0 / self._uniform(1, *self.crop).item()
        # Affine maps voxel v to c + zoom·(v − c) + shift; the box stays inside while |shift| <= (n − 1)/2·(zoom − 1).
        room = torch.tensor([(n - 1) / 2 * (zoom - 1) for n in shape], dtype=torch.float64)
        shifts = self._uniform(len(shape), -1.0, 1.0) * room
        planes = len(shape) * (len(shape) - 1) // 2
        angles = self._uniform(planes, -self.degrees, self.degrees)
        return Affine(tuple(angles.tolist()), zoom, tuple(shifts.tolist()))


def _check_pair(name: str, value, above: float) -> tuple[float, float]:
    """A range (a, b) of numbers with above < a <= b."""
    valid = isinstance(value, tuple | list) and len(value) == 2
    valid = valid and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not valid or not above < value[0] <= value[1]:
        bound = "" if above == float("-inf") else f"{above} < "
        raise BrainlearnError(f"{name} must be a pair (a, b) with {bound}a <= b, not {value!r}.")
    return float(value[0]), float(value[1])


class ViewPair:
    """Two independent draws of ``transform`` on an item's image: (view1, view2), each (C, *spatial) like the image.

    Args:
        transform: a random transform of item dicts.
        dims: spatial dimensions the image must have (2 for slices, 3 for volumes).
    """

    def __init__(self, transform: Callable[[dict], dict], dims: int) -> None:
        self.transform, self.dims = transform, dims

    def __call__(self, item: dict) -> tuple[Tensor, Tensor]:
        shape = spatial_shape({"image": item.get("image") if isinstance(item, dict) else None})
        if len(shape) != self.dims:
            raise BrainlearnError(
                f"simclr views: the {self.dims}d preset needs images (C, {'H, W' if self.dims == 2 else 'X, Y, Z'}), "
                f"not {tuple(item['image'].shape)}. Use preset '{len(shape)}d'."
            )
        image_only = {"image": item["image"]}  # a mask or label has no business being warped here
        return self.transform(image_only)["image"], self.transform(image_only)["image"]

    def __repr__(self) -> str:
        return f"ViewPair({self.transform!r}, dims={self.dims})"


# Spatial strength per preset: (crop side range, degrees). Registered brains differ from one another by less than
# SimCLR's usual crops move one brain: on the built-in cohort at 4 mm, two views with crops of 70–100 % and ±10°
# correlate 0.67 while two different participants correlate 0.93, and NT-Xent stayed at chance for 150 steps;
# with 90–100 % and ±5° the views correlate 0.91 and the loss falls (docs/benchmarks.md).
_CROP = {"2d": ((0.5, 1.0), 15.0), "3d": ((0.9, 1.0), 5.0)}


def simclr_views(
    preset: str = "3d",
    *,
    crop: tuple[float, float] | None = None,
    degrees: float | None = None,
    seed: int | None = None,
) -> ViewPair:
    """SimCLR's two-view augmentation adapted to MRI, for slices (``"2d"``) or volumes (``"3d"``).

    ==========================================================================  ===========
    step (in order)                                                             probability
    ==========================================================================  ===========
    crop and resize: side 50–100 % (2d) / 90–100 % (3d), ±15° / ±5° per plane   1
    left-right flip (axis 0 of a RAS image and of its axial slices)             0.5
    intensity: foreground × 0.8–1.2, + −0.2–0.2 (z-scored units)                0.8
    gamma, log(gamma) within ±0.3                                               0.5
    bias field, order 3, coefficients within ±0.3                               0.5
    blur, sigma 0.25–1 voxel per axis                                           0.5
    Gaussian noise, std 0–0.1 of the foreground's                               0.5
    ==========================================================================  ===========

    Args:
        preset: ``"2d"`` for items (C, H, W), ``"3d"`` for items (C, X, Y, Z).
        crop: range of the crop's side as a fraction of the image's, instead of the preset's.
        degrees: largest rotation per plane, instead of the preset's.
        seed: None uses torch's global generator; an integer seeds each step's own stream.

    Returns:
        A callable mapping an item dict to two independently augmented views of its image.

    Raises:
        BrainlearnError: an unknown preset, with the closest known one, or a crop or angle out of range.
    """
    if preset not in _CROP:
        close = difflib.get_close_matches(str(preset).lower(), _CROP, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BrainlearnError(f"simclr_views: preset must be one of {', '.join(_CROP)}, not {preset!r}.{hint}")
    crop = tuple(crop) if crop is not None else _CROP[preset][0]
    degrees = degrees if degrees is not None else _CROP[preset][1]
    s = [None] * 7 if seed is None else [int(q.generate_state(1)[0]) for q in np.random.SeedSequence(seed).spawn(7)]
    steps = [
        RandomCropResize(crop, degrees, p=1.0, seed=s[0]),
        RandomFlip((0,), p=0.5, seed=s[1]),
        RandomIntensityScaleShift((0.8, 1.2), (-0.2, 0.2), p=0.8, seed=s[2]),
        RandomGamma((-0.3, 0.3), p=0.5, seed=s[3]),
        RandomBiasField(0.3, 3, p=0.5, seed=s[4]),
        RandomBlur((0.25, 1.0), p=0.5, seed=s[5]),
        RandomNoise((0.0, 0.1), p=0.5, seed=s[6]),
    ]
    return ViewPair(Compose(steps), dims=int(preset[0]))


class TwoViews(Dataset):
    """Items of ``dataset`` with ``image`` (and ``mask``) replaced by ``view1`` and ``view2`` from ``views``.

    Args:
        dataset: any map-style dataset whose items are dicts with ``image`` (C, *spatial).
        views: maps an item to two views, e.g. :func:`simclr_views`.
    """

    def __init__(self, dataset: Dataset, views: Callable[[dict], tuple[Tensor, Tensor]]) -> None:
        self.dataset, self.views = dataset, views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[i]
        if not isinstance(item, dict) or "image" not in item:
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise BrainlearnError(f"TwoViews: item {i} must be a dict with 'image', not {got}.")
        view1, view2 = self.views(item)
        rest = {key: value for key, value in item.items() if key not in ("image", "mask")}
        return {**rest, "view1": view1, "view2": view2}


# -------------------------------------------------------------------------------------------------------- module


class SimCLRModule(lightning.LightningModule):
    """Pretrain ``backbone`` with SimCLR on batches of ``view1`` and ``view2`` (B, C, *spatial).

    Args:
        backbone: maps images (B, C, *spatial) to features (B, F) and has ``num_features`` (unless ``head`` is given).
        head: the projection head; None builds ``ProjectionHead(backbone.num_features)``.
        temperature: NT-Xent's τ.
        lr: learning rate (document 001: 1e-2 with SGD).
        momentum: SGD momentum (ignored by AdamW).
        rho: SAM's neighbourhood radius.
        adaptive: ASAM instead of SAM.
        optimizer: ``"sgd"`` or ``"adamw"``, the base optimizer.
        weight_decay: the base optimizer's weight decay.
        use_sam: False steps the base optimizer alone (one pass per batch).

    Raises:
        BrainlearnError: an unknown optimizer, a non-positive temperature, a negative rho, or a backbone without
            ``num_features`` and no head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        head: nn.Module | None = None,
        temperature: float = 0.1,
        lr: float = 1e-2,
        momentum: float = 0.9,
        rho: float = 0.05,
        adaptive: bool = False,
        optimizer: str = "sgd",
        weight_decay: float = 0.0,
        use_sam: bool = True,
    ) -> None:
        super().__init__()
        _check_settings(backbone, head, temperature, rho, optimizer)
        self.automatic_optimization = False  # SAM needs two passes per step
        self.save_hyperparameters(ignore=["backbone", "head"])
        self.backbone = backbone
        self.head = head if head is not None else ProjectionHead(backbone.num_features)
        self.temperature, self.lr, self.momentum, self.rho = temperature, lr, momentum, rho
        self.adaptive, self.optimizer_name, self.weight_decay, self.use_sam = adaptive, optimizer, weight_decay, use_sam

    def forward(self, image: Tensor) -> Tensor:
        """The backbone's features (B, F) of images (B, C, *spatial): the representation to transfer."""
        return self.backbone(image)

    def loss(self, batch: dict) -> Tensor:
        """NT-Xent of the batch's two views, both passed through the network as one batch (2B, C, *spatial)."""
        b = len(batch["view1"])
        z = self.head(self.backbone(torch.cat([batch["view1"], batch["view2"]])))  # (2B, out)
        return nt_xent(z[:b], z[b:], self.temperature)

    def training_step(self, batch: dict, batch_index: int) -> Tensor:
        _check_batch(batch)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self.loss(batch)
        self.manual_backward(loss)  # g at w
        if self.use_sam:
            optimizer.step(closure=lambda: self._perturbed_backward(batch))  # w + ε, g' there, back, base step
        else:
            optimizer.step()
        self.log(
            "train/loss", loss.detach(), on_step=True, on_epoch=True, batch_size=len(batch["view1"]), prog_bar=True
        )
        return loss.detach()

    def _perturbed_backward(self, batch: dict) -> Tensor:
        with frozen_norm_stats(self):  # the batch already moved BatchNorm's running statistics once
            loss = self.loss(batch)
            self.manual_backward(loss)
        return loss.detach()

    def validation_step(self, batch: dict, batch_index: int) -> None:
        if len(batch["view1"]) < 2:  # a lone image has no negatives; a last batch of one is skipped
            return
        self.log("val/loss", self.loss(batch), on_epoch=True, batch_size=len(batch["view1"]), prog_bar=True)

    def on_fit_start(self) -> None:
        if self.use_sam and str(self.trainer.precision) == "16-mixed":
            raise BrainlearnError(
                "SimCLR with SAM: precision 16-mixed is not supported (its gradient scaler cannot run SAM's "
                "second pass); set trainer.precision to bf16-mixed or 32-true, or use_sam to false."
            )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        base = OPTIMIZERS[self.optimizer_name]
        options = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer_name == "sgd":
            options["momentum"] = self.momentum
        if self.use_sam:
            return SAM(self.parameters(), base, rho=self.rho, adaptive=self.adaptive, **options)
        return base(self.parameters(), **options)


def _check_settings(backbone: nn.Module, head, temperature: float, rho: float, optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        close = difflib.get_close_matches(str(optimizer).lower(), OPTIMIZERS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BrainlearnError(f"simclr: optimizer must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}.{hint}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise BrainlearnError(f"simclr: temperature must be a number > 0, not {temperature!r}.")
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not rho >= 0:
        raise BrainlearnError(f"simclr: rho must be a number >= 0, not {rho!r}.")
    if head is None and not isinstance(getattr(backbone, "num_features", None), int):
        raise BrainlearnError(
            f"simclr: the backbone must have an integer num_features to size the projection head, not "
            f"{getattr(backbone, 'num_features', None)!r}; use create_backbone or pass head=."
        )


def _check_batch(batch: dict) -> None:
    if "view1" not in batch or "view2" not in batch:
        raise BrainlearnError(
            f"simclr: batches must hold 'view1' and 'view2' (wrap the dataset in TwoViews), not {sorted(batch)}."
        )
    if len(batch["view1"]) < 2:
        raise BrainlearnError(
            f"simclr: a training batch must hold at least 2 images, not {len(batch['view1'])}; use a batch size "
            ">= 2 and drop_last=True in the training DataLoader."
        )


def export_backbone(checkpoint_path: str | os.PathLike) -> dict[str, Tensor]:
    """The backbone's weights from a :class:`SimCLRModule` checkpoint, keys without the ``backbone.`` prefix.

    Load them with ``network.backbone.load_state_dict(export_backbone(path))`` (strict) into a
    :class:`~brainlearn.models.networks.BackboneWithHead` built with the same backbone name and options.

    Raises:
        BrainlearnError: the file cannot be read safely, or it holds no backbone weights.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict):
        raise BrainlearnError(f"{checkpoint_path}: not a Lightning checkpoint (no state_dict); pass a SimCLR .ckpt.")
    prefix = "backbone."
    backbone = {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
    if not backbone:
        found = ", ".join(sorted(weights)[:3]) or "none"
        raise BrainlearnError(
            f"{checkpoint_path}: holds no '{prefix}*' weights (it has {found}, ...); "
            "pass a checkpoint of brainlearn pretrain simclr."
        )
    return backbone
