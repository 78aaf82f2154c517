"""The Lightning modules learn on a tiny problem and keep the conventions the evaluation relies on."""

import torch
from torch.utils.data import DataLoader

from brainlearn.methods.brain_age import BrainAgeModule
from brainlearn.methods.supervised import ClassifierModule
from brainlearn.models.networks import build_network
from brainlearn.trainer import fit


def _blobs(n: int, seed: int) -> list[dict]:
    """Volumes (1, 32, 40, 24); class 1 has a bright blob where the hippocampus would be; age ∝ blob size."""
    rng = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        image = torch.randn(1, 32, 40, 24, generator=rng) * 0.3 + 1.0
        label = i % 2
        if label:
            image[0, 10:18, 14:22, 8:14] += 2.0
        items.append(
            {
                "image": image,
                "label": label,
                "age": 60.0 + 20 * label,
                "participant_id": f"sub-{i}",
                "session_id": "ses-01",
            }
        )
    return items


def _epoch_losses(run_dir) -> list[float]:
    import pandas as pd

    logged = pd.read_csv(run_dir / "logs" / "metrics.csv")
    return logged["train/loss_epoch"].dropna().tolist()


def test_classifier_loss_falls_and_checkpoint_is_chosen_on_validation(tmp_path):
    network = build_network("resnet3d", in_channels=1, outputs=2, options={"widen_factor": 0.125})
    module = ClassifierModule(network, ("CN", "AD"), lr=1e-3, betas=(0.9, 0.999), lr_decay=1.0)
    train, val = DataLoader(_blobs(8, 0), batch_size=4, shuffle=True), DataLoader(_blobs(4, 1), batch_size=4)
    settings = {"max_epochs": 6, "monitor": "val/loss", "progress_bar": False, "log_every_n_steps": 1}
    fit(module, tmp_path, settings, train_dataloaders=train, val_dataloaders=val)
    losses = _epoch_losses(tmp_path)
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()
    probabilities = module(torch.stack([item["image"] for item in _blobs(4, 2)]))
    assert probabilities.shape == (4, 2) and torch.allclose(probabilities.sum(1), torch.ones(4))


def test_awarenet_classifier_trains_through_the_module(tmp_path):
    network = build_network("awarenet", in_channels=1, outputs=2, options={"width": 8})
    module = ClassifierModule(network, ("CN", "AD"), lr=1e-3)
    train = DataLoader(_blobs(4, 0), batch_size=2)
    fit(module, tmp_path, {"max_epochs": 2, "progress_bar": False}, train_dataloaders=train, val_dataloaders=train)
    assert module(torch.zeros(1, 1, 32, 40, 24)).shape == (1, 2)


def test_brain_age_predicts_years_and_learns(tmp_path):
    network = build_network("sfcn", in_channels=1, outputs=1, options={"channels": [4, 8, 8, 8, 8, 8]})
    module = BrainAgeModule(network, age_mean=70.0, age_std=10.0, loss="mse+ranking", lr=3e-3, lr_decay=1.0)
    train, val = DataLoader(_blobs(8, 0), batch_size=4, shuffle=True), DataLoader(_blobs(4, 1), batch_size=4)
    settings = {"max_epochs": 8, "monitor": "val/mae", "progress_bar": False, "log_every_n_steps": 1}
    fit(module, tmp_path, settings, train_dataloaders=train, val_dataloaders=val)
    losses = _epoch_losses(tmp_path)
    assert losses[-1] < 0.5 * losses[0], losses
    ages = module.eval()(torch.stack([item["image"] for item in _blobs(4, 3)]))
    assert ages.shape == (4,) and ((ages > 30) & (ages < 110)).all()  # years, not standardized units


def test_a_pretrained_backbone_loads_completely_or_not_at_all(tmp_path):
    from brainlearn.commands_train import load_backbone
    from brainlearn.errors import BrainlearnError

    options = {"channels": [4, 8, 8, 8, 8, 8]}
    source = build_network("sfcn", in_channels=1, outputs=2, options=options)
    torch.save(
        {"state_dict": {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}}, tmp_path / "a.ckpt"
    )
    target = build_network("sfcn", in_channels=1, outputs=2, options=options)
    load_backbone(target.backbone, tmp_path / "a.ckpt")
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(value, target.backbone.state_dict()[key])
    wider = build_network("sfcn", in_channels=1, outputs=2, options={"channels": [8, 8, 8, 8, 8, 8]})
    import pytest

    with pytest.raises(BrainlearnError, match=r"its backbone is not this network.s: .* in the checkpoint, .* here"):
        load_backbone(wider.backbone, tmp_path / "a.ckpt")


def test_frozen_backbone_stays_put_while_the_head_learns(tmp_path):
    network = build_network("sfcn", in_channels=1, outputs=2, options={"channels": [4, 8, 8, 8, 8, 8]})
    before = {k: v.clone() for k, v in network.backbone.state_dict().items()}
    head = network.head.linear.weight.clone()
    module = ClassifierModule(network, ("CN", "AD"), lr=1e-2, freeze_backbone=True)
    data = DataLoader(_blobs(8, 0), batch_size=4)
    fit(module, tmp_path, {"max_epochs": 2, "progress_bar": False}, train_dataloaders=data, val_dataloaders=data)
    assert all(torch.equal(before[k], v) for k, v in network.backbone.state_dict().items())
    assert not torch.equal(head, network.head.linear.weight)
