"""SimCLR: NT-Xent matches its definition, views are MRI-safe, and pretraining lowers the loss, resumes and exports."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from brainlearn.data.augment import Compose, RandomFlip
from brainlearn.errors import BrainlearnError
from brainlearn.methods.simclr import (
    ProjectionHead,
    RandomCropResize,
    RandomIntensityScaleShift,
    SimCLRModule,
    TwoViews,
    ViewPair,
    export_backbone,
    nt_xent,
    simclr_views,
)
from brainlearn.models.backbones import create_backbone
from brainlearn.models.networks import build_network
from brainlearn.optim import SAM
from brainlearn.trainer import fit

SFCN = {"channels": (4, 8, 8, 8, 8, 8)}

# ---------------------------------------------------------------------------------------------------------- loss


def _nt_xent_by_loops(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Chen et al. 2020, eq. 1, anchor by anchor: −log(exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ)), averaged over 2B."""
    z = torch.cat([z1, z2])
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        cosine = [float(z[i] @ z[k] / (z[i].norm() * z[k].norm())) for k in range(n)]
        denominator = sum(math.exp(cosine[k] / temperature) for k in range(n) if k != i)
        total += -math.log(math.exp(cosine[j] / temperature) / denominator)
    return total / n


@pytest.mark.parametrize(("b", "temperature"), [(2, 0.1), (5, 0.5), (4, 1.0)])
def test_nt_xent_equals_the_direct_computation(b, temperature):
    rng = torch.Generator().manual_seed(b)
    z1, z2 = torch.randn(b, 7, generator=rng), torch.randn(b, 7, generator=rng)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(_nt_xent_by_loops(z1, z2, temperature), abs=1e-5)


def test_nt_xent_is_near_zero_when_views_agree_and_images_differ():
    z = torch.eye(4, 6)  # each image its own direction, both views identical
    assert nt_xent(z, z.clone(), 0.05).item() < 1e-6


@pytest.mark.parametrize("temperature", [0, -0.1, float("nan")])
def test_nt_xent_temperature_must_be_positive(temperature):
    with pytest.raises(BrainlearnError, match="temperature must be a number > 0, not"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), temperature)


def test_nt_xent_needs_two_images_and_matching_shapes():
    with pytest.raises(BrainlearnError, match=r"at least 2 images \(B >= 2\) to have negatives, not 1"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4), 0.1)
    with pytest.raises(BrainlearnError, match=r"must both be \(B, D\), not \(3, 4\) and \(3, 5\)"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 5), 0.1)


def test_projection_head_maps_features_to_projections():
    assert ProjectionHead(16, hidden=8, out=5)(torch.randn(3, 16)).shape == (3, 5)
    with pytest.raises(BrainlearnError, match="hidden must be a positive integer, not 0"):
        ProjectionHead(16, hidden=0)


# --------------------------------------------------------------------------------------------------------- views


def _volumes(n: int) -> list[dict]:
    """Brains (1, 24, 32, 20): a noisy box of tissue holding one bright blob whose shape differs per volume."""
    rng = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        image = torch.zeros(1, 24, 32, 20)
        image[:, 2:22, 2:30, 2:18] = 1 + 0.1 * torch.randn(1, 20, 28, 16, generator=rng)
        a, b, c = (2, 4, 8)[i % 3], (2, 4, 8)[i // 3 % 3], (2, 6)[i // 9 % 2]
        image[:, 12 - a // 2 : 12 + a // 2, 16 - b // 2 : 16 + b // 2, 10 - c // 2 : 10 + c // 2] += 2.0
        items.append({"image": image, "label": i % 2, "participant_id": f"sub-{i:02d}"})
    return items


@pytest.mark.parametrize(("preset", "shape"), [("3d", (1, 24, 32, 20)), ("2d", (2, 32, 40))])
def test_views_are_two_different_images_of_the_same_shape(preset, shape):
    image = torch.zeros(shape)
    image[:, 3:-3, 3:-3] = 1 + torch.rand(shape[0], shape[1] - 6, shape[2] - 6, *shape[3:])
    view1, view2 = simclr_views(preset, seed=0)({"image": image})
    assert view1.shape == view2.shape == shape and view1.dtype == torch.float32
    assert torch.isfinite(view1).all() and not torch.equal(view1, view2)
    again = simclr_views(preset, seed=0)({"image": image})
    assert torch.equal(again[0], view1) and torch.equal(again[1], view2)  # a seed replays the draws


def test_views_refuse_an_image_of_the_other_dimension_and_unknown_presets():
    with pytest.raises(BrainlearnError, match=r"the 2d preset needs images \(C, H, W\), not \(1, 8, 8, 8\)"):
        simclr_views("2d")({"image": torch.ones(1, 8, 8, 8)})
    with pytest.raises(BrainlearnError, match="preset must be one of 2d, 3d, not '3D'. Did you mean '3d'?"):
        simclr_views("3D")
    with pytest.raises(BrainlearnError, match=r"crop must be fractions of the side in \(0, 1\], not \(0.9, 1.2\)"):
        simclr_views("3d", crop=(0.9, 1.2))


def test_milder_crops_keep_the_views_of_one_volume_closer():
    """Registered brains need mild spatial views (the 3d default); strong crops move a view far from its twin."""
    grid = torch.stack(torch.meshgrid(*(torch.linspace(-1, 1, n) for n in (24, 32, 20)), indexing="ij"))
    image = (torch.sin(4 * grid[0]) * torch.cos(3 * grid[1]) + grid[2])[None]  # (1, 24, 32, 20), smooth, no symmetry

    def correlation(crop, degrees):
        views = simclr_views("3d", crop=crop, degrees=degrees, seed=3)
        pairs = [views({"image": image}) for _ in range(8)]
        return sum(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) for a, b in pairs) / 8

    assert correlation((0.9, 1.0), 5.0) > correlation((0.5, 0.7), 20.0) + 0.1


@pytest.mark.parametrize("seed", range(5))
def test_crop_resize_stays_inside_the_image(seed):
    cropped = RandomCropResize((0.5, 1.0), degrees=0.0, seed=seed)({"image": torch.ones(1, 24, 32, 20)})["image"]
    assert cropped.min() > 0.999  # no zero padding came in: the box lay inside


def test_random_view_steps_check_their_ranges():
    with pytest.raises(BrainlearnError, match=r"crop must be a pair \(a, b\) with 0.0 < a <= b, not \(0, 1\)"):
        RandomCropResize((0, 1))
    with pytest.raises(BrainlearnError, match=r"crop must be fractions of the side in \(0, 1\], not \(0.5, 1.5\)"):
        RandomCropResize((0.5, 1.5))
    with pytest.raises(BrainlearnError, match=r"shift must be a pair \(a, b\) with a <= b, not \(0.2, -0.2\)"):
        RandomIntensityScaleShift(shift=(0.2, -0.2))


def test_two_views_wraps_a_dataset_and_collates():
    dataset = TwoViews(_volumes(2), simclr_views("3d", seed=1))
    item = dataset[0]
    assert set(item) == {"view1", "view2", "label", "participant_id"} and len(dataset) == 2
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["view1"].shape == batch["view2"].shape == (2, 1, 24, 32, 20)
    with pytest.raises(BrainlearnError, match=r"item 0 must be a dict with 'image', not \['mask'\]"):
        TwoViews([{"mask": torch.ones(1, 4, 4)}], simclr_views("2d"))[0]


# -------------------------------------------------------------------------------------------------------- module


def test_module_checks_its_settings_and_builds_its_optimizer():
    backbone = create_backbone("sfcn", 1, **SFCN)
    with pytest.raises(BrainlearnError, match="optimizer must be one of sgd, adamw, not 'sdg'. Did you mean 'sgd'?"):
        SimCLRModule(backbone, optimizer="sdg")
    with pytest.raises(BrainlearnError, match="temperature must be a number > 0, not 0"):
        SimCLRModule(backbone, temperature=0)
    with pytest.raises(BrainlearnError, match="rho must be a number >= 0, not -1"):
        SimCLRModule(backbone, rho=-1)
    with pytest.raises(BrainlearnError, match="must have an integer num_features"):
        SimCLRModule(nn.Conv3d(1, 2, 3))
    sam = SimCLRModule(backbone, lr=0.01, momentum=0.9, rho=0.1).configure_optimizers()
    assert isinstance(sam, SAM) and isinstance(sam.base_optimizer, torch.optim.SGD)
    assert sam.param_groups[0]["momentum"] == 0.9 and sam.param_groups[0]["rho"] == 0.1
    adamw = SimCLRModule(backbone, optimizer="adamw", use_sam=False, weight_decay=1e-8).configure_optimizers()
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 1e-8


def _cheap_views(seed: int) -> ViewPair:
    """Crop-resize, flip and intensity only: the training tests exercise the module, the presets are tested above."""
    steps = [RandomCropResize(seed=seed), RandomFlip((0,), seed=seed + 1), RandomIntensityScaleShift(seed=seed + 2)]
    return ViewPair(Compose(steps), dims=3)


def _loaders() -> tuple[DataLoader, DataLoader]:
    volumes = _volumes(16)
    train = DataLoader(TwoViews(volumes, _cheap_views(0)), batch_size=8, shuffle=True, drop_last=True)
    return train, DataLoader(TwoViews(volumes[:4], _cheap_views(10)), batch_size=4)


def _settings(epochs: int) -> dict:
    return {"max_epochs": epochs, "progress_bar": False, "log_every_n_steps": 1}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A SimCLR run folder: 2 epochs of 2 SAM steps, then resumed to 3 epochs by a fresh module."""
    run_dir = tmp_path_factory.mktemp("simclr")
    module = SimCLRModule(create_backbone("sfcn", 1, **SFCN), lr=0.05, rho=0.05)
    first = fit(module, run_dir, _settings(2), train_dataloaders=_loaders()[0], val_dataloaders=_loaders()[1])
    resumed = SimCLRModule(create_backbone("sfcn", 1, **SFCN), lr=0.05, rho=0.05)
    second = fit(resumed, run_dir, _settings(3), train_dataloaders=_loaders()[0], val_dataloaders=_loaders()[1])
    return run_dir, first.global_step, second.global_step, resumed


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize(("use_sam", "passes"), [(False, 1), (True, 2)])
def test_plain_adamw_takes_one_pass_per_step_and_sam_two(tmp_path, use_sam, passes):
    module = SimCLRModule(create_backbone("sfcn", 1, **SFCN), optimizer="adamw", lr=1e-3, use_sam=use_sam)
    before = [p.detach().clone() for p in module.backbone.parameters()]
    calls = []
    module.backbone.register_forward_hook(lambda *_: calls.append(1))
    train = DataLoader(TwoViews(_volumes(4), _cheap_views(0)), batch_size=4)
    trainer = fit(module, tmp_path, _settings(1), train_dataloaders=train)
    assert trainer.global_step == 1 and math.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert len(calls) == passes  # forward passes of the backbone in the one training step
    assert any(not torch.equal(a, b) for a, b in zip(before, module.backbone.parameters(), strict=True))


def test_pretraining_lowers_the_loss_and_logs_validation(pretrained):
    import pandas as pd

    run_dir, *_ = pretrained
    logged = pd.read_csv(run_dir / "logs" / "metrics.csv")
    losses = logged["train/loss_epoch"].dropna().tolist()
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert logged["val/loss"].notna().sum() == 3


def test_a_sam_checkpoint_resumes_where_it_stopped(pretrained):
    _, first_steps, second_steps, resumed = pretrained
    assert (first_steps, second_steps) == (4, 6)
    norms = [m for m in resumed.modules() if isinstance(m, nn.BatchNorm3d)]
    # one running-statistics update per step: SAM's second pass leaves them alone
    assert all(int(m.num_batches_tracked) == 6 for m in norms)


def test_exported_backbone_loads_strictly_into_the_downstream_networks(pretrained):
    run_dir, *_, resumed = pretrained
    weights = export_backbone(run_dir / "checkpoints" / "last.ckpt")
    backbone = create_backbone("sfcn", 1, **SFCN)
    backbone.load_state_dict(weights, strict=True)
    network = build_network("sfcn", in_channels=1, outputs=2, options=SFCN)
    network.backbone.load_state_dict(weights, strict=True)
    for name, value in resumed.backbone.state_dict().items():
        assert torch.equal(weights[name], value), name
        assert torch.equal(network.backbone.state_dict()[name], value), name


def test_export_backbone_refuses_checkpoints_without_one(tmp_path):
    torch.save({"state_dict": {"network.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(BrainlearnError, match=r"holds no 'backbone\.\*' weights \(it has network.weight, ...\)"):
        export_backbone(tmp_path / "other.ckpt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.ckpt")
    with pytest.raises(BrainlearnError, match="not a Lightning checkpoint"):
        export_backbone(tmp_path / "plain.ckpt")
