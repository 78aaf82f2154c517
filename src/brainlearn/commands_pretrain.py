"""``brainlearn pretrain simclr | context-encoder | inpaint``: self-supervised pretraining on scans without labels.

Each writes a training run folder whose ``checkpoints/best.ckpt`` (lowest validation loss) carries the weights a
downstream model starts from: ``backbone.*`` for SimCLR (``train classify --init-from``, ``experiment
label-efficiency --pretrained``), ``generator.network.encoder.*`` for the context encoder and
``network.network.swinViT.*`` for inpainting (``train segment --init-from``, with the same ``model_options``).
Only the training split is used for pretraining and the validation split for checkpoint selection; no label or
lesion mask is read.
"""

from __future__ import annotations

import logging
from typing import Any

from brainlearn.cli import Command
from brainlearn.commands_train import _kept_checkpoint
from brainlearn.trainer import TRAINER_DEFAULTS

log = logging.getLogger("brainlearn")


def run_pretrain_simclr(config: dict[str, Any], run) -> dict[str, Any]:
    """SimCLR (document 001): two augmented views per volume, NT-Xent, SAM around SGD or AdamW."""
    from brainlearn.commands_train import open_cache
    from brainlearn.data.datasets import VolumeDataset
    from brainlearn.data.loaders import VolumeTransform, make_loader
    from brainlearn.methods.simclr import SimCLRModule, TwoViews, simclr_views
    from brainlearn.models.backbones import create_backbone
    from brainlearn.trainer import fit

    cache = open_cache(config, run.root, config["modalities"])
    seed = config["trainer"]["seed"]

    def views(split: str, offset: int) -> TwoViews:
        volumes = VolumeDataset(
            cache,
            modalities=tuple(config["modalities"]),
            classes=None,
            split=split,
            transform=VolumeTransform(downsample=config["downsample"]),
        )
        views = config["views"]
        return TwoViews(volumes, simclr_views("3d", crop=views["crop"], degrees=views["degrees"], seed=seed + offset))

    train, val = views("train", 0), views("val", 1)
    common = {"batch_size": config["batch_size"], "num_workers": config["num_workers"]}
    backbone = create_backbone(config["model"], len(config["modalities"]), **config["model_options"])
    opt = config["optimizer"]
    module = SimCLRModule(
        backbone,
        temperature=config["temperature"],
        lr=opt["lr"],
        momentum=opt["momentum"],
        rho=opt["rho"],
        adaptive=opt["adaptive"],
        optimizer=opt["name"],
        weight_decay=opt["weight_decay"],
        use_sam=opt["sam"],
    )
    log.info("pretraining on %d unlabelled volumes, validating on %d", len(train), len(val))
    fit(
        module,
        run.root,
        config["trainer"],
        train_dataloaders=make_loader(train, shuffle=True, drop_last=True, **common),
        val_dataloaders=make_loader(val, **common),
    )
    best = _kept_checkpoint(run.root)
    log.info("look at: %s — pass it as --init-from / --pretrained (its backbone.* weights)", best)
    return {"pretrain/checkpoint": str(best)}


def run_pretrain_context_encoder(config: dict[str, Any], run) -> dict[str, Any]:
    """Document 002's context encoder: a U-Net generator fills checkerboard-masked slices against a PatchGAN."""
    from torch.utils.data import RandomSampler

    from brainlearn.commands_train import open_cache
    from brainlearn.data.lesions import LesionSliceDataset, every_nth
    from brainlearn.data.loaders import make_loader
    from brainlearn.methods.context_encoder import ContextEncoderModule, PatchDiscriminator, build_generator
    from brainlearn.trainer import fit

    cache = open_cache(config, run.root, config["modalities"])
    train = LesionSliceDataset(cache, modalities=config["modalities"], split="train")
    val = LesionSliceDataset(cache, modalities=config["modalities"], split="val")
    val = every_nth(val, config["val_samples"])
    sampler = RandomSampler(train, replacement=True, num_samples=config["samples_per_epoch"])
    common = {"batch_size": config["batch_size"], "num_workers": config["num_workers"]}
    channels, opt = len(config["modalities"]), config["optimizer"]
    module = ContextEncoderModule(
        build_generator(channels, config["model_options"]),
        PatchDiscriminator(2 * channels),  # the (masked input, image) pair
        l1_weight=config["l1_weight"],
        lr=opt["lr"],
        betas=tuple(opt["betas"]),
        cells=tuple(config["cells"]),
        seed=config["trainer"]["seed"],
    )
    log.info("pretraining on %d of %d unlabelled slices per epoch", len(sampler), len(train))
    fit(
        module,
        run.root,
        config["trainer"],
        train_dataloaders=make_loader(train, sampler=sampler, **common),
        val_dataloaders=make_loader(val, **common),
    )
    best = _kept_checkpoint(run.root)
    log.info("look at: %s — pass it to train segment --init-from (its generator.network.encoder.* weights)", best)
    return {"pretrain/checkpoint": str(best)}


def run_pretrain_inpaint(config: dict[str, Any], run) -> dict[str, Any]:
    """Document 003's pretraining: a 3D Swin UNETR reconstructs masked cubes of flipped patches, L1 + MS-SSIM."""
    from torch.utils.data import RandomSampler

    from brainlearn.commands_segment import check_swin_patch
    from brainlearn.commands_train import open_cache
    from brainlearn.data.lesions import LesionPatchDataset, every_nth
    from brainlearn.data.loaders import make_loader
    from brainlearn.methods.inpainting import InpaintingModule, build_inpainter
    from brainlearn.trainer import fit

    check_swin_patch(config["patch"])
    cache = open_cache(config, run.root, config["modalities"])
    seed, modalities = config["trainer"]["seed"], config["modalities"]
    patches = {"modalities": modalities, "patch": config["patch"], "lesion_fraction": 0.0}  # any head voxel
    train = LesionPatchDataset(cache, split="train", seed=seed, **patches)
    val = LesionPatchDataset(cache, split="val", seed=seed + 1, **patches)
    val = every_nth(val, config["val_samples"], fixed=True)  # cropped once: the same patches at every epoch
    sampler = RandomSampler(train, replacement=True, num_samples=config["samples_per_epoch"])
    common = {"batch_size": config["batch_size"], "num_workers": config["num_workers"]}
    opt = config["optimizer"]
    module = InpaintingModule(
        build_inpainter(len(modalities), config["model_options"]),
        mask_patch=config["mask_patch"],
        mask_fraction=config["mask_fraction"],
        ssim_weight=config["ssim_weight"],
        lr=opt["lr"],
        weight_decay=opt["weight_decay"],
        seed=seed,
    )
    log.info(
        "pretraining on %d unlabelled %d³ patches per epoch, validating on %d", len(sampler), config["patch"], len(val)
    )
    fit(
        module,
        run.root,
        config["trainer"],
        train_dataloaders=make_loader(train, sampler=sampler, **common),
        # the validation patches are already read into memory: workers would only copy them
        val_dataloaders=make_loader(val, batch_size=config["batch_size"], num_workers=0),
    )
    best = _kept_checkpoint(run.root)
    log.info("look at: %s — pass it to train segment --init-from (its network.network.swinViT.* weights)", best)
    return {"pretrain/checkpoint": str(best)}


# where the unlabelled sessions come from, the same for every pretraining command
_INPUTS = {"cache": None, "table": None, "bids": None, "labels": ["CN", "MCI", "AD"]}
_INPUT_OPTIONS = (
    ("--cache", "cache", {"metavar": "DIR", "help": "a brainlearn cache folder"}),
    ("--table", "table", {"metavar": "FILE", "help": "participants table with a split column (instead of --cache)"}),
    ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder (instead of --cache)"}),
)

PRETRAIN_COMMANDS = (
    Command(
        name="simclr",
        group="pretrain",
        help="SimCLR on unlabelled volumes: two views, NT-Xent, SAM (document 001), exports a backbone",
        defaults={
            **_INPUTS,
            "modalities": ["t1"],
            "model": "sfcn",
            "model_options": {},
            "downsample": 2,
            "batch_size": 8,
            "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
            "temperature": 0.2,
            # crop side range and rotation of the two views: milder than SimCLR's usual, see simclr_views
            "views": {"crop": [0.9, 1.0], "degrees": 5.0},
            # document 001: SGD lr 1e-2, momentum 0.9, under SAM (adaptive, rho 2); here AdamW under SAM, the
            # combination measured to learn on the built-in cohort (docs/benchmarks.md); set name: sgd, lr: 1e-2
            # for document 001's
            "optimizer": {
                "name": "adamw",
                "lr": 1e-3,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "sam": True,
                "rho": 0.05,
                "adaptive": False,
            },
            "trainer": {**TRAINER_DEFAULTS, "max_epochs": 30, "monitor": "val/loss", "mode": "min"},
            "out": "runs/pretrain-simclr",
        },
        path_keys=("cache", "table", "bids", "out"),
        run=run_pretrain_simclr,
        options=(
            *_INPUT_OPTIONS,
            ("--model", "model", {"help": "backbone: sfcn, resnet3d, densenet3d, resnet50_slices"}),
        ),
    ),
    Command(
        name="context-encoder",
        group="pretrain",
        help="context encoder on unlabelled slices: fill checkerboard holes, L1 + adversarial (document 002)",
        defaults={
            **_INPUTS,
            "modalities": ["t1", "t2", "flair"],
            "model_options": {},  # the U-Net's, e.g. decoder_channels: must match train segment's to transfer
            "cells": [8, 24],  # checkerboard cell size range in pixels (document 002: 16)
            "l1_weight": 100.0,
            "samples_per_epoch": 512,
            "val_samples": 256,
            "batch_size": 16,
            "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
            "optimizer": {"lr": 2e-4, "betas": [0.5, 0.999]},
            "trainer": {**TRAINER_DEFAULTS, "max_epochs": 10, "monitor": "val/l1", "mode": "min"},
            "out": "runs/pretrain-context-encoder",
        },
        path_keys=("cache", "table", "bids", "out"),
        run=run_pretrain_context_encoder,
        options=_INPUT_OPTIONS,
    ),
    Command(
        name="inpaint",
        group="pretrain",
        help="Swin UNETR on unlabelled 3D patches: reconstruct masked cubes, L1 + MS-SSIM (document 003)",
        defaults={
            **_INPUTS,
            "modalities": ["t1"],
            "model_options": {},  # the Swin UNETR's, e.g. feature_size: must match train segment's to transfer
            "patch": 64,  # voxels per axis, a multiple of 32
            "mask_patch": 8,  # edge of the hidden cubes in voxels
            "mask_fraction": 0.4,  # share of the cubes hidden
            "ssim_weight": 1.0,  # loss = masked L1 + ssim_weight × (1 − MS-SSIM)
            "samples_per_epoch": 256,
            "val_samples": 32,
            "batch_size": 2,
            "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
            "optimizer": {"lr": 1e-3, "weight_decay": 0.01},  # AdamW (document 003)
            "trainer": {**TRAINER_DEFAULTS, "max_epochs": 20, "monitor": "val/l1", "mode": "min"},
            "out": "runs/pretrain-inpaint",
        },
        path_keys=("cache", "table", "bids", "out"),
        run=run_pretrain_inpaint,
        options=_INPUT_OPTIONS,
    ),
)
