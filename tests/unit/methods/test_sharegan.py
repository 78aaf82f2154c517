"""ShareGAN and joint training: losses, image pool, schedule, and learning on a tiny unpaired cohort."""

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from brainlearn.methods.joint import JointModule
from brainlearn.methods.sharegan import ImagePool, ShareGANModule, decay_after, lsgan_loss
from brainlearn.models.awarenet import AwareNet
from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI, ShareDiscriminator, ShareSynNet
from brainlearn.trainer import fit


def _head(shift: int, label: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy 'MRI' (bright rim, dark core) and 'PET' (bright core) of one head, (1, 32, 32, 32) in [-1, 1]."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij"))
    radius = ((grid - 16 - shift) ** 2).sum(0).sqrt()
    head = (radius < 12).float()
    mri = head * (0.3 + 0.6 * (radius > 7).float()) + 0.05 * torch.rand(32, 32, 32, generator=rng)
    pet = head * (0.9 - 0.5 * (radius > 7).float() - 0.3 * label * (radius < 4).float())
    return mri[None] * 2 - 1, pet[None] * 2 - 1


def _pairs(n: int, seed: int, *, paired: bool) -> list[dict]:
    rng = torch.Generator().manual_seed(seed)
    heads = [_head(i % 3 - 1, i % 2, rng) for i in range(n)]
    items = []
    for i, (mri, pet) in enumerate(heads):
        partner = heads[i if paired else (i + 1) % n][1]  # unpaired: the PET of another head
        items.append({"mri": mri, "pet": partner if not paired else pet, "label": i % 2})
    return items


def _gan(width: int = 2):
    torch.manual_seed(0)
    return (
        ShareSynNet(width=width),
        ShareDiscriminator(width=width, downsamples=2),
        ShareDiscriminator(width=width, downsamples=2),
    )


def test_lsgan_loss_is_the_mean_squared_distance_to_the_target():
    scores = torch.tensor([0.0, 0.5, 1.0])
    assert lsgan_loss(scores, True).item() == pytest.approx((1 + 0.25 + 0) / 3)
    assert lsgan_loss(scores, False).item() == pytest.approx((0 + 0.25 + 1) / 3)


def test_image_pool_fills_then_swaps_about_half_of_the_fakes():
    pool = ImagePool(size=3, seed=0)
    first = torch.arange(3.0).view(3, 1)
    assert torch.equal(pool.query(first), first)  # filling: every fake comes back unchanged
    new = torch.full((200, 1), 100.0)
    out = pool.query(new)
    swapped = (out != 100).sum().item()
    assert 0 < swapped <= 200 and len(pool.images) == 3
    assert torch.equal(ImagePool(size=0).query(new), new)


def test_learning_rate_holds_then_decays_per_epoch():
    factor = decay_after(15, 0.95)
    assert [factor(e) for e in (0, 14)] == [1, 1]
    assert factor(15) == pytest.approx(0.95) and factor(16) == pytest.approx(0.95**2)


def test_the_batched_translations_equal_separate_generator_calls():
    generator, d_pet, d_mri = _gan()
    module = ShareGANModule(generator.eval(), d_pet, d_mri)
    mri, pet = torch.rand(1, 1, 32, 32, 32) * 2 - 1, torch.rand(1, 1, 32, 32, 32) * 2 - 1
    out = module.translate_both_ways(mri, pet)
    close = {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(out["fake_pet"], generator(mri, MRI_TO_PET), **close)
    torch.testing.assert_close(out["same_mri"], generator(mri, PET_TO_MRI), **close)
    torch.testing.assert_close(out["cycled_pet"], generator(generator(pet, PET_TO_MRI), MRI_TO_PET), **close)


def _logged(run_dir, column: str) -> list[float]:
    return pd.read_csv(run_dir / "logs" / "metrics.csv")[column].dropna().tolist()


def test_sharegan_lowers_the_cycle_loss_on_a_tiny_unpaired_cohort(tmp_path):
    module = ShareGANModule(*_gan(width=2), lr=5e-3, accumulate=2, pool_size=2)
    train = DataLoader(_pairs(6, 0, paired=False), batch_size=2, shuffle=True)
    val = DataLoader(_pairs(2, 1, paired=True), batch_size=2)
    settings = {"max_epochs": 6, "progress_bar": False, "log_every_n_steps": 1, "monitor": "val/ssim", "mode": "max"}
    fit(module, tmp_path, settings, train_dataloaders=train, val_dataloaders=val)
    cycle = _logged(tmp_path, "train/cycle_epoch")
    assert len(cycle) == 6 and cycle[-1] < 0.7 * cycle[0], cycle
    assert len(_logged(tmp_path, "val/ssim")) == 6 and (tmp_path / "checkpoints" / "best.ckpt").exists()


def test_joint_training_updates_generator_and_classifier_and_reports_three_aucs(tmp_path):
    generator, d_pet, d_mri = _gan()
    classifier = AwareNet(1, 2, width=8)
    before = {
        "generator": [p.detach().clone() for p in generator.parameters()],
        "classifier": [p.detach().clone() for p in classifier.parameters()],
    }
    module = JointModule(generator, d_pet, d_mri, classifier, ("CN", "AD"), lr=1e-3, lr_classifier=1e-3)
    train = DataLoader(_pairs(4, 0, paired=False), batch_size=1)
    val = DataLoader(_pairs(4, 1, paired=True), batch_size=2)
    fit(module, tmp_path, {"max_epochs": 1, "progress_bar": False}, train_dataloaders=train, val_dataloaders=val)
    for name, network in (("generator", generator), ("classifier", classifier)):
        changed = [not torch.equal(a, b) for a, b in zip(before[name], network.parameters(), strict=True)]
        assert sum(changed) > len(changed) // 2, name
    for name in ("val/auroc", "val/auroc_mri", "val/auroc_synthesized", "val/ssim"):
        assert len(_logged(tmp_path, name)) == 1
    out = module(torch.rand(2, 1, 32, 32, 32) * 2 - 1)
    assert out["pet"].shape == (2, 1, 32, 32, 32)
    torch.testing.assert_close(out["p_both"], (out["p_mri"] + out["p_synthesized"]) / 2)


def test_joint_learning_rates_are_separate_and_decay_together():
    generator, d_pet, d_mri = _gan()
    module = JointModule(generator, d_pet, d_mri, AwareNet(1, 2, width=8), ("CN", "AD"))
    optimizers, schedules = module.configure_optimizers()
    assert [o.param_groups[0]["lr"] for o in optimizers] == [1e-6, 1e-6, 1e-5]  # generator, discriminators, classifier
    for schedule in schedules:
        assert schedule.lr_lambdas[0](0) == 1 and schedule.lr_lambdas[0](1) == pytest.approx(0.7)
