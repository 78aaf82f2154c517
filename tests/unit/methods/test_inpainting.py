"""Inpainting pretraining (document 003): cube masks, MS-SSIM, flips, a loss that falls, the Swin encoder's transfer."""

import math

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from brainlearn.commands_segment import load_encoder
from brainlearn.errors import BrainlearnError
from brainlearn.methods.inpainting import (
    InpaintingModule,
    build_inpainter,
    ms_ssim,
    random_flip,
    random_patch_mask,
)
from brainlearn.models.segmenters import build_segmenter, encoder_of
from brainlearn.trainer import fit

SHAPE = (32, 40, 24)
SWIN = {"feature_size": 12}


def _smooth(n: int, seed: int, channels: int = 2) -> torch.Tensor:
    """(n, channels, 32, 40, 24) smooth z-scored fields: something a network can learn to fill in."""
    rng = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, channels, 4, 5, 3, generator=rng)
    fields = F.interpolate(coarse, size=SHAPE, mode="trilinear", align_corners=False)
    return (fields - fields.mean()) / fields.std()


def _cells(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """The grid cell of every voxel (X, Y, Z), the grid's phase read off the mask's edges (all on one residue)."""
    coordinates = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        edges = torch.nonzero(mask.to(torch.int8).diff(dim=axis).any(dim=others)).flatten() + 1
        residues = set((edges % patch).tolist())
        assert len(residues) == 1, f"axis {axis}: mask edges at {edges.tolist()} are not on one {patch}-voxel grid"
        phase = -residues.pop() % patch
        coordinates.append((torch.arange(mask.shape[axis]) + phase) // patch)
    x, y, z = coordinates
    cells = (x[:, None, None] * 1000 + y[None, :, None]) * 1000 + z[None, None, :]  # (X, Y, Z) cell id
    return torch.unique(cells, return_inverse=True)[1]


@pytest.mark.parametrize(("shape", "patch", "fraction", "seed"), [(SHAPE, 8, 0.4, 0), ((30, 41, 23), 7, 0.25, 3)])
def test_mask_hides_whole_cubes_and_exactly_the_configured_share_of_them(shape, patch, fraction, seed):
    mask = random_patch_mask(shape, patch, fraction, torch.Generator().manual_seed(seed))
    assert mask.shape == shape and mask.dtype == torch.bool
    cells = _cells(mask, patch).flatten()
    hidden = torch.zeros(int(cells.max()) + 1).index_add_(0, cells, mask.flatten().float())
    size = torch.bincount(cells).float()
    assert torch.all((hidden == 0) | (hidden == size)), "a cube is partly hidden"
    assert int((hidden > 0).sum()) == round(fraction * len(size))


def test_masks_repeat_with_the_seed_and_bad_settings_are_refused():
    first, again = (random_patch_mask(SHAPE, 8, 0.4, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, random_patch_mask(SHAPE, 8, 0.4, torch.Generator().manual_seed(6)))
    with pytest.raises(BrainlearnError, match="mask_patch must be a positive number of voxels"):
        random_patch_mask(SHAPE, 0, 0.4)
    with pytest.raises(BrainlearnError, match=r"mask_fraction must be a share of the cubes in \(0, 1\)"):
        random_patch_mask(SHAPE, 8, 1.0)
    with pytest.raises(BrainlearnError, match=r"three positive voxel counts \(X, Y, Z\), not \(32, 40\)"):
        random_patch_mask((32, 40), 8, 0.4)


def test_ms_ssim_is_one_for_identical_images_falls_with_noise_and_is_monais():
    from monai.metrics import MultiScaleSSIMMetric

    image = _smooth(2, 0)
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ms_ssim(image, image), torch.ones(2))
    values = [float(ms_ssim(image + sigma * noise, image).mean()) for sigma in (0.05, 0.3, 1.0)]
    assert 1 > values[0] > values[1] > values[2] > 0, values
    weights = torch.tensor([0.0448, 0.2856, 0.3001])
    monai = MultiScaleSSIMMetric(
        spatial_dims=3,
        data_range=float(image.max() - image.min()),
        kernel_size=5,
        kernel_sigma=1.0,
        weights=(weights / weights.sum()).tolist(),
        reduction="none",
    )
    torch.testing.assert_close(ms_ssim(image + 0.3 * noise, image), monai(image + 0.3 * noise, image)[:, 0])


def test_ms_ssim_has_finite_gradients_and_refuses_patches_too_small():
    image = _smooth(2, 0)
    prediction = torch.randn(image.shape, requires_grad=True)
    (1 - ms_ssim(prediction, image)).sum().backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    with pytest.raises(BrainlearnError, match=r"MS-SSIM of images \(16, 40, 24\).*Use larger patches"):
        ms_ssim(image[:, :, :16], image[:, :, :16])


def test_flips_are_in_the_axial_plane_and_all_three_occur():
    image = _smooth(12, 2)
    flipped = random_flip(image, torch.Generator().manual_seed(0))
    kinds = []
    for before, after in zip(image, flipped, strict=True):
        options = [before, before.flip(-3), before.flip(-2)]  # keep, flip X, flip Y
        kinds.append(next(k for k, option in enumerate(options) if torch.equal(after, option)))
    assert set(kinds) == {0, 1, 2}


class _Spy(nn.Module):
    """Returns its input and keeps it, to see what the network is shown."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x


def test_the_network_sees_zeros_where_the_mask_hides_and_the_image_elsewhere():
    module = InpaintingModule(_Spy())
    image = _smooth(2, 3) + 5.0  # no voxel is 0 by chance
    mask = module._masks(image, torch.Generator().manual_seed(0))  # (2, 1, X, Y, Z)
    module(image, mask)
    hidden = mask.expand_as(image)
    assert mask.shape == (2, 1, *SHAPE) and not torch.equal(mask[0], mask[1])
    assert torch.all(module.network.seen[hidden] == 0) and torch.equal(module.network.seen[~hidden], image[~hidden])


def test_training_lowers_the_loss_and_logs_every_metric(tmp_path):
    network = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(8, 8, 3, padding=2, dilation=2))
    network.append(nn.LeakyReLU(0.2)).append(nn.Conv3d(8, 1, 3, padding=1))  # a small stand-in for the Swin UNETR
    module = InpaintingModule(network, mask_patch=4, lr=3e-3)
    train = DataLoader([{"image": image} for image in _smooth(8, 4, channels=1)], batch_size=4, shuffle=True)
    val = DataLoader([{"image": image} for image in _smooth(2, 5, channels=1)], batch_size=2)
    settings = {"max_epochs": 3, "progress_bar": False, "log_every_n_steps": 1}
    fit(module, tmp_path, settings, train_dataloaders=train, val_dataloaders=val)
    metrics = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    loss = metrics["train/loss_epoch"].dropna().tolist()
    assert loss[-1] < 0.8 * loss[0], loss
    for name in ("train/l1_epoch", "train/ms_ssim_epoch", "val/l1", "val/ms_ssim"):
        values = metrics[name].dropna()
        assert len(values) == 3 and values.map(math.isfinite).all(), name


def test_the_pretrained_swin_encoder_loads_into_the_segmenter_whole(tmp_path):
    inpainter = build_inpainter(2, SWIN)
    with torch.no_grad():
        assert inpainter.eval()(torch.zeros(1, 2, *SHAPE)).shape == (1, 2, *SHAPE)
    checkpoint = tmp_path / "inpaint.ckpt"
    torch.save({"state_dict": InpaintingModule(inpainter).state_dict()}, checkpoint)  # Lightning's keys
    segmenter = build_segmenter("swin_unetr", in_channels=2, options=SWIN)
    pretrained, fresh = encoder_of(inpainter).state_dict(), encoder_of(segmenter).state_dict()
    assert pretrained.keys() == fresh.keys() and not torch.equal(
        pretrained["layers1.0.blocks.0.attn.qkv.weight"], fresh["layers1.0.blocks.0.attn.qkv.weight"]
    )
    load_encoder(segmenter, checkpoint)
    loaded = encoder_of(segmenter).state_dict()
    assert all(torch.equal(loaded[key], pretrained[key]) for key in pretrained)


@pytest.mark.parametrize(
    ("channels", "options", "problems"),
    [
        (
            2,
            {"feature_size": 24},
            r"\(12, 2, 2, 2, 2\) in the checkpoint, \(24, 2, 2, 2, 2\) here; .* and [0-9]+ more\.",
        ),
        (3, SWIN, r"\(12, 2, 2, 2, 2\) in the checkpoint, \(12, 3, 2, 2, 2\) here\."),
    ],
)
def test_a_segmenter_of_another_shape_is_refused_by_name(tmp_path, channels, options, problems):
    torch.save({"state_dict": InpaintingModule(build_inpainter(2, SWIN)).state_dict()}, tmp_path / "a.ckpt")
    segmenter = build_segmenter("swin_unetr", in_channels=channels, options=options)
    expected = f"not this network's: patch_embed.proj.weight: {problems} Build the segmenter with the same model, "
    with pytest.raises(BrainlearnError, match=expected + "model_options and modalities as the pretraining run"):
        load_encoder(segmenter, tmp_path / "a.ckpt")
