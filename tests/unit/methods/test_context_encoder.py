"""Context-encoder pretraining: checkerboard masks, the networks' shapes, a falling L1, and encoder transfer."""

import logging
import math

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from brainlearn.errors import BrainlearnError
from brainlearn.methods.context_encoder import (
    ContextEncoderModule,
    PatchDiscriminator,
    RandomCheckerboard,
    build_generator,
    checkerboard_mask,
    masked_l1,
)
from brainlearn.models.segmenters import build_segmenter, encoder_of
from brainlearn.trainer import fit

SMALL = {"decoder_channels": (32, 16, 16, 8, 8)}


def _smooth_slices(n: int, seed: int, shape: tuple[int, int] = (32, 40)) -> list[dict]:
    """(3, *shape) z-scored sums of three low-frequency plane waves per channel: easy to fill from the context."""
    rng = torch.Generator().manual_seed(seed)
    y, x = torch.linspace(0, 1, shape[0])[:, None], torch.linspace(0, 1, shape[1])[None]
    items = []
    for _ in range(n):
        wave = torch.rand(3, 3, 3, 1, 1, generator=rng)  # (channel, wave, [fy, fx, phase], 1, 1)
        image = torch.sin(2 * math.pi * (1.5 * wave[:, :, 0] * y + 1.5 * wave[:, :, 1] * x + wave[:, :, 2])).sum(1)
        image = (image - image.mean((1, 2), keepdim=True)) / image.std((1, 2), keepdim=True)  # (3, H, W)
        items.append({"image": image})
    return items


def test_random_checkerboards_mask_about_half_of_any_slice():
    masking, rng = RandomCheckerboard(cells=(8, 24)), torch.Generator().manual_seed(0)
    fractions = torch.tensor([masking((49, 58), rng).float().mean() for _ in range(300)])
    assert (fractions - 0.5).abs().max() < 0.05, fractions
    assert abs(fractions.mean() - 0.5) < 0.01


@pytest.mark.parametrize("cell", [8, 13, 16, 24])
def test_checkerboard_masks_exactly_half_when_a_side_is_a_multiple_of_two_cells(cell):
    for phase in [(0, 0), (3, 5), (cell, 1), (2 * cell - 1, 3 * cell)]:
        mask = checkerboard_mask((4 * cell, 2 * cell + 7), cell, phase)
        assert mask.dtype == torch.bool and mask.shape == (4 * cell, 2 * cell + 7)
        assert mask.float().mean() == 0.5


def test_other_fractions_are_exact_on_multiples_of_four_cells():
    for fraction in (0.25, 0.75, 3 / 16):
        assert checkerboard_mask((64, 48), 4, (1, 2), fraction=fraction).float().mean() == fraction


def test_checkerboard_alternates_cells_and_the_phase_shifts_it():
    mask = checkerboard_mask((64, 64), 16)
    assert mask[0, 0] != mask[0, 16] and mask[0, 0] != mask[16, 0] and mask[0, 0] == mask[16, 16]
    assert torch.equal(mask[:16, :16], mask[0, 0].expand(16, 16))  # a cell is uniform
    shifted = checkerboard_mask((64, 64), 16, (3, 5))
    assert torch.equal(shifted[:-3, :-5], mask[3:, 5:])  # mask_phase[y, x] = mask[y + dy, x + dx]
    assert torch.equal(checkerboard_mask((64, 64), 16, (16, 0)), ~mask)  # one cell over: the other half
    assert torch.equal(checkerboard_mask((64, 64), 16, (32, 32)), mask)


def test_random_checkerboards_vary_and_repeat_with_the_seed():
    masking = RandomCheckerboard(cells=(8, 24))
    draws = [masking((40, 48), torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"cells": (0, 8)}, "positive pixel sizes, not"),
        ({"cells": (24, 8)}, "smallest, largest"),
        ({"fraction": 0.3}, "multiple of 1/16"),
    ],
)
def test_bad_checkerboard_settings_are_refused(arguments, message):
    with pytest.raises(BrainlearnError, match=message):
        RandomCheckerboard(**arguments)
    with pytest.raises(BrainlearnError, match="positive number of pixels, not 0"):
        checkerboard_mask((8, 8), 0)


def test_generator_and_discriminator_shapes():
    image = torch.randn(2, 3, 49, 58)
    generator = build_generator(3, SMALL)
    assert generator(image).shape == (2, 3, 49, 58)
    logits = PatchDiscriminator(6, channels=8)(image, image)
    assert logits.shape[:2] == (2, 1) and logits.shape[2] > 1 and logits.shape[3] > 1
    with pytest.raises(BrainlearnError, match="does not take these options"):
        build_generator(3, {"decoder_chanels": (8,)})


def test_masked_l1_counts_only_the_masked_pixels():
    target, prediction = torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), 5.0)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    prediction[..., 2:, :] = 100.0  # outside the mask: ignored
    assert masked_l1(prediction, target, mask) == 5.0


def test_filling_keeps_the_visible_pixels():
    module = ContextEncoderModule(build_generator(3, SMALL), PatchDiscriminator(6, channels=8)).eval()
    image = torch.randn(1, 3, 32, 40)
    mask = checkerboard_mask((32, 40), 8)[None, None]
    filled = module(image, mask)
    assert torch.equal(filled[~mask.expand_as(image)], image[~mask.expand_as(image)])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A short context-encoder run: (module, run folder)."""
    run_dir = tmp_path_factory.mktemp("context_encoder")
    generator, discriminator = build_generator(3, SMALL), PatchDiscriminator(6, channels=16)
    module = ContextEncoderModule(generator, discriminator, lr=2e-3, cells=(4, 8))  # small cells: quick to learn
    train = DataLoader(_smooth_slices(16, 0), batch_size=4, shuffle=True)
    val = DataLoader(_smooth_slices(4, 1), batch_size=4)
    settings = {"max_epochs": 3, "progress_bar": False, "log_every_n_steps": 1}
    fit(module, run_dir, settings, train_dataloaders=train, val_dataloaders=val)
    return module, run_dir


def test_masked_l1_falls_and_every_loss_is_logged(pretrained):
    _, run_dir = pretrained
    metrics = pd.read_csv(run_dir / "logs" / "metrics.csv")
    l1 = metrics["train/l1_epoch"].dropna().tolist()
    assert l1[-1] < 0.8 * l1[0], l1
    for name in ("train/loss_g_epoch", "train/loss_d_epoch", "val/l1"):
        values = metrics[name].dropna()
        assert len(values) == 3 and values.map(math.isfinite).all(), name


def test_the_segmenter_takes_every_encoder_tensor_from_the_checkpoint(pretrained, caplog):
    from brainlearn.commands_segment import load_encoder

    module, run_dir = pretrained
    segmenter = build_segmenter("unet2d", in_channels=3, options=SMALL)
    with caplog.at_level(logging.INFO, logger="brainlearn"):
        load_encoder(segmenter, run_dir / "checkpoints" / "last.ckpt")
    loaded, trained = encoder_of(segmenter).state_dict(), encoder_of(module.generator).state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[key], trained[key]) for key in trained)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    exported = [key for key in state if "encoder." in key]
    assert len(exported) == len(loaded) and all(key.startswith("generator.network.encoder.") for key in exported)
    assert f"({len(loaded)} tensors)" in caplog.text
