"""Lesion segmentation: losses, the padded U-Nets, encoder transfer and freezing, and a loss that falls."""

import pytest
import torch
from torch.utils.data import DataLoader

from brainlearn.errors import BrainlearnError
from brainlearn.losses import segmentation_loss
from brainlearn.methods.segmentation import SegmentModule, predict_volume
from brainlearn.models.segmenters import build_segmenter, encoder_of
from brainlearn.trainer import fit

SMALL = {"decoder_channels": (32, 16, 16, 8, 8)}


def _slices(n: int, seed: int) -> list[dict]:
    """(3, 40, 48) slices with a bright FLAIR-like blob and its mask."""
    rng = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        image, mask = torch.randn(3, 40, 48, generator=rng) * 0.2, torch.zeros(1, 40, 48)
        x, y = (int(v) for v in torch.randint(6, 34, (2,), generator=rng))
        mask[0, x - 3 : x + 3, y - 3 : y + 3] = 1
        image[2] += 2.0 * mask[0]
        items.append({"image": image, "mask": mask})
    return items


@pytest.mark.parametrize("name", ["bce", "dice", "combo"])
def test_losses_are_small_for_the_right_answer_and_large_for_the_wrong_one(name):
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:8, 4:8] = 1
    right, wrong = (target * 2 - 1) * 10, (1 - target * 2) * 10
    assert segmentation_loss(name, right, target) < 0.05 < segmentation_loss(name, wrong, target)


def test_positive_weight_raises_the_cost_of_missed_lesions():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, 2:4] = 1
    missed = torch.full_like(target, -2.0)
    assert segmentation_loss("bce", missed, target, pos_weight=10) > 3 * segmentation_loss("bce", missed, target)


def test_unknown_loss_is_refused_with_a_suggestion():
    with pytest.raises(BrainlearnError, match="did you mean 'dice'"):
        segmentation_loss("dise", torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))


def test_segmenters_take_any_size_and_return_logits_of_that_size():
    unet = build_segmenter("unet2d", in_channels=3, options=SMALL)
    assert unet(torch.zeros(2, 3, 49, 58)).shape == (2, 1, 49, 58)
    swin = build_segmenter("swin_unetr", in_channels=2, options={"feature_size": 12})
    assert swin(torch.zeros(1, 2, 30, 33, 20)).shape == (1, 1, 30, 33, 20)


def test_frozen_encoder_does_not_move_and_the_decoder_learns(tmp_path):
    network = build_segmenter("unet2d", in_channels=3, options=SMALL)
    before = {k: v.clone() for k, v in encoder_of(network).state_dict().items()}
    module = SegmentModule(network, loss="combo", lr=3e-3, freeze_encoder=True)
    data = DataLoader(_slices(16, 0), batch_size=8, shuffle=True)
    fit(module, tmp_path, {"max_epochs": 3, "progress_bar": False}, train_dataloaders=data, val_dataloaders=data)
    after = encoder_of(network).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm statistics


def test_loss_falls_and_whole_volume_inference_stacks_slices(tmp_path):
    module = SegmentModule(build_segmenter("unet2d", in_channels=3, options=SMALL), loss="combo", lr=3e-3)
    data = DataLoader(_slices(32, 1), batch_size=8, shuffle=True)
    settings = {"max_epochs": 6, "progress_bar": False, "log_every_n_steps": 1}
    fit(module, tmp_path, settings, train_dataloaders=data, val_dataloaders=data)
    import pandas as pd

    losses = pd.read_csv(tmp_path / "logs" / "metrics.csv")["train/loss_epoch"].dropna().tolist()
    assert losses[-1] < 0.7 * losses[0], losses
    volume = torch.stack([item["image"] for item in _slices(5, 2)], dim=-1).numpy()  # (3, 40, 48, 5)
    probabilities = predict_volume(module, volume, spatial_dims=2)
    assert probabilities.shape == (40, 48, 5) and 0 <= probabilities.min() and probabilities.max() <= 1


def test_encoder_weights_load_from_a_checkpoint(tmp_path):
    from brainlearn.commands_segment import load_encoder

    source = build_segmenter("unet2d", in_channels=3, options=SMALL)
    torch.save({"state_dict": {f"network.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "a.ckpt")
    target = build_segmenter("unet2d", in_channels=3, options=SMALL)
    load_encoder(target, tmp_path / "a.ckpt")
    for key, value in encoder_of(source).state_dict().items():
        assert torch.equal(value, encoder_of(target).state_dict()[key])
    torch.save({"state_dict": {"head.weight": torch.zeros(2)}}, tmp_path / "b.ckpt")
    with pytest.raises(BrainlearnError, match=r"holds no .encoder\.\*. weights"):
        load_encoder(target, tmp_path / "b.ckpt")


def test_an_encoder_loaded_in_part_is_refused_with_the_missing_tensors(tmp_path):
    from brainlearn.commands_segment import load_encoder

    state = {f"network.{k}": v for k, v in build_segmenter("unet2d", in_channels=3, options=SMALL).state_dict().items()}
    del state["network.network.encoder.conv1.weight"]
    torch.save({"state_dict": state}, tmp_path / "a.ckpt")
    with pytest.raises(
        BrainlearnError, match="its encoder is not this network's: conv1.weight: missing from the checkpoint. Build"
    ):
        load_encoder(build_segmenter("unet2d", in_channels=3, options=SMALL), tmp_path / "a.ckpt")
