"""VQ-GAN training (document 003): hinge and feature-matching losses, slices, the GAN start, and learning."""

import math

import lightning
import pytest
import torch
from torch.utils.data import DataLoader

from brainlearn.errors import BrainlearnError
from brainlearn.methods.vqgan import (
    VQGANModule,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from brainlearn.models.vqgan import VQGAN3D, build_discriminators

SHAPE = (16, 24, 16)
# Lightning 2.6 on torch 2.13 warns about its own use of a deprecated pytree API (as brainlearn.trainer.fit filters).
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\)"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
]


def _heads(n: int, seed: int) -> list[dict]:
    """Toy heads (1, 16, 24, 16) in [-1, 1]: a smooth bright ellipsoid with a darker core on a -1 background."""
    rng = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    items = []
    for _ in range(n):
        centre = (torch.rand(3, generator=rng) - 0.5) * 0.3
        radius = ((grid - centre.view(3, 1, 1, 1)) ** 2).sum(0).sqrt()
        head = torch.sigmoid((0.7 - radius) * 20) * (0.6 + 0.4 * torch.sigmoid((radius - 0.3) * 20))
        items.append({"image": (head * 2 - 1)[None], "participant_id": "sub-x"})
    return items


def _module(**options) -> VQGANModule:
    torch.manual_seed(0)
    vqgan = VQGAN3D(channels=4, downsample=2, embedding_dim=4, n_codes=32)
    return VQGANModule(vqgan, *build_discriminators(1, channels=4, layers=2), **options)


def _trainer(**options) -> lightning.Trainer:
    settings = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return lightning.Trainer(**settings, enable_model_summary=False, num_sanity_val_steps=0, **options)


def _l1(module: VQGANModule, items: list[dict]) -> float:
    image = torch.cat([item["image"][None] for item in items])
    with torch.no_grad():
        return (module.eval()(image)["reconstruction"] - image).abs().mean().item()


def test_hinge_losses_on_known_scores():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0)


def test_feature_matching_averages_the_intermediate_layers_and_ignores_the_logits():
    real = [torch.zeros(2, 3), torch.ones(4), torch.zeros(1)]
    fake = [torch.full((2, 3), 2.0, requires_grad=True), torch.ones(4), torch.full((1,), 100.0)]
    assert feature_matching_loss(real, fake).item() == pytest.approx((2 + 0) / 2)


def test_slices_are_the_same_axial_slice_of_real_and_fake_and_follow_the_seed():
    module = _module(seed=3)
    real = torch.randn(3, 2, *SHAPE)
    (real_slices, real_volumes), (fake_slices, fake_volumes) = module.views(real, real.clone())
    assert real_slices.shape == (3, 2, 16, 24) and torch.equal(real_slices, fake_slices)
    assert torch.equal(real_volumes, real) and torch.equal(fake_volumes, real)
    for b in range(3):
        assert any(torch.equal(real_slices[b], real[b, ..., k]) for k in range(SHAPE[-1]))
    again = _module(seed=3).views(real, real)[0][0]
    assert torch.equal(again, real_slices)


def test_the_adversarial_losses_train_the_autoencoder_only():
    module = _module()
    real = torch.rand(1, 1, *SHAPE) * 2 - 1
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    real_views, fake_views = module.views(real, fake)
    losses = module.adversarial_losses(module.discriminate(real_views), fake_views)
    (losses["gan"] + losses["feature"]).backward()
    discriminators = [*module.slice_discriminator.parameters(), *module.volume_discriminator.parameters()]
    assert all(p.grad is None for p in discriminators) and all(p.requires_grad for p in discriminators)
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_discriminators_start_after_gan_start_autoencoder_steps():
    module = _module(gan_start=2, lr=1e-3)

    def discriminators() -> list[torch.Tensor]:
        networks = (module.slice_discriminator, module.volume_discriminator)
        return [p.detach().clone() for network in networks for p in network.parameters()]

    train = DataLoader(_heads(2, 0), batch_size=2)
    before = discriminators()
    trainer = _trainer(max_epochs=2, limit_val_batches=0)  # one batch per epoch: two autoencoder steps
    trainer.fit(module, train)
    assert int(module.steps_done) == 2 and "train/loss_d_step" not in trainer.callback_metrics
    assert all(torch.equal(a, b) for a, b in zip(before, discriminators(), strict=True))
    trainer = _trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(module, train)
    assert int(module.steps_done) == 3
    assert sum(not torch.equal(a, b) for a, b in zip(before, discriminators(), strict=True)) > len(before) // 2
    for name in ("loss_d", "gan", "feature"):
        assert math.isfinite(trainer.callback_metrics[f"train/{name}_step"]), name


def test_reconstruction_l1_falls_within_a_few_dozen_steps_and_validation_reports():
    module, train = _module(lr=3e-3), _heads(2, 0)
    before = _l1(module, train)
    trainer = _trainer(max_epochs=30, check_val_every_n_epoch=30)
    trainer.fit(module.train(), DataLoader(train, batch_size=2), DataLoader(_heads(2, 1), batch_size=1))
    after = _l1(module, train)
    assert after < 0.3 * before, (before, after)  # about 0.87 → 0.09 on the CPU
    metrics = trainer.callback_metrics
    for name in ("val/l1", "val/psnr", "val/ssim", "val/perplexity", "train/perplexity_epoch"):
        assert math.isfinite(metrics[name]), name
    assert metrics["val/l1"] < before and 1 <= metrics["val/perplexity"] <= 32


def test_steps_done_survives_a_state_dict_round_trip():
    module = _module()
    module.steps_done.fill_(12345)
    restored = _module()
    restored.load_state_dict(module.state_dict())
    assert int(restored.steps_done) == 12345


def test_defaults_are_document_003s_and_each_optimizer_owns_its_networks():
    module = _module()
    assert (module.l1_weight, module.gan_weight, module.feature_weight, module.gan_start) == (4.0, 1.0, 4.0, 10000)
    optimizer_ae, optimizer_d = module.configure_optimizers()
    assert optimizer_ae.defaults["lr"] == 3e-4 and optimizer_d.defaults["betas"] == (0.5, 0.9)
    assert {id(p) for p in optimizer_ae.param_groups[0]["params"]} == {id(p) for p in module.vqgan.parameters()}
    assert len(optimizer_d.param_groups[0]["params"]) == len(list(module.parameters())) - len(
        list(module.vqgan.parameters())
    )


def test_a_batch_without_an_image_is_refused_with_what_came():
    module = _module()
    with pytest.raises(BrainlearnError, match=r"an 'image' tensor \(B, C, X, Y, Z\).*got keys \['t1w'\]"):
        module.validation_step({"t1w": torch.zeros(1, 1, *SHAPE)}, 0)
    with pytest.raises(BrainlearnError, match=r"image of shape \(1, 16, 24, 16\)"):
        module.validation_step({"image": torch.zeros(1, *SHAPE)}, 0)
    with pytest.raises(BrainlearnError, match="gan_start must be a non-negative integer"):
        _module(gan_start=-1)
