"""``brainlearn train sharegan --stage 1|2`` and ``brainlearn train joint``: document 000's three training stages.

1. ``train sharegan --stage 1``: ShareGAN on random crops (by default half the padded volume per axis: 128³ of
   256³) of unpaired MRI and PET.
2. ``train sharegan --stage 2 --init-from STAGE1_RUN``: the same on whole volumes, from the stage-1 weights;
   the diagnosis network's stage 2 is ``train classify`` on MRI with ``intensity=range`` (the [-1, 1] scaling
   the generator works in).
3. ``train joint --synthesis SHAREGAN_RUN --classifier CLASSIFY_RUN``: both together (:mod:`brainlearn.methods.joint`).

Each run folder holds, besides the trainer's files, ``selection.json`` (the kept checkpoint and, for joint runs,
the decision thresholds fitted on validation for each input), ``inference.json`` (what inference needs: the
modalities, ``downsample`` and ``model_options``, which a joint run takes from its ShareGAN run, and a joint run's
classifier: ``model``, ``model_options``, ``dropout``, ``classes``) and
``evaluation/<split>/``: the synthesis scores
of every paired session (``synthesis.tsv``, ``synthesis.json`` with 95 % intervals) and, for joint runs, the
diagnosis reports from the MRI, from the synthesized PET and from both (``mri/``, ``synthesized/``, ``both/``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainlearn.cli import Command
from brainlearn.commands_train import _DATA_DEFAULTS, _DATA_OPTIONS, INFERENCE_FILE, open_cache, read_finished_run
from brainlearn.errors import BrainlearnError
from brainlearn.trainer import TRAINER_DEFAULTS

log = logging.getLogger("brainlearn")

INFERENCE_KEYS = ("mri", "pet", "downsample", "model_options")


def run_train_sharegan(config: dict[str, Any], run) -> dict[str, Any]:
    """Stage 1 or 2: ShareGAN on unpaired MRI and PET; keep the checkpoint with the best validation SSIM."""
    from brainlearn.data.loaders import pair_loaders
    from brainlearn.methods.sharegan import ShareGANModule
    from brainlearn.trainer import fit

    _check_trainer(config)
    cache = open_cache(config, run.root, [config["mri"], config["pet"]])
    crop = _crop(config, cache)
    log.info("stage %d: %s", config["stage"], f"random {crop} crops" if crop else "whole volumes")
    train, val = pair_loaders(cache, **_pair_settings(config), crop=crop, seed=config["trainer"]["seed"])
    generator, discriminator_pet, discriminator_mri = build_gan(config["model_options"])
    if config["init_from"]:
        checkpoint, earlier = read_generator_run(config["init_from"])
        if _architecture(earlier["model_options"]) != _architecture(config["model_options"]):
            raise BrainlearnError(
                f"init_from: {config['init_from']} has model_options {earlier['model_options']}, this run "
                f"{config['model_options']}; the networks' (all but checkpointing) must be the same."
            )
        _load_gan(checkpoint, generator, discriminator_pet, discriminator_mri)
    module = ShareGANModule(generator, discriminator_pet, discriminator_mri, **_gan_settings(config))
    fit(module, run.root, config["trainer"], train_dataloaders=train, val_dataloaders=val)
    write_inference_settings(run.root, {key: config[key] for key in INFERENCE_KEYS})
    return _select_and_evaluate(module, cache, config, run)


def run_train_joint(config: dict[str, Any], run) -> dict[str, Any]:
    """Stage 3: a ShareGAN run and a classifier run trained together; keep the checkpoint with the best val AUC."""
    from brainlearn.data.loaders import pair_loaders
    from brainlearn.methods.joint import JointModule
    from brainlearn.trainer import fit

    _check_trainer(config)
    synthesis_checkpoint, generator_settings = read_generator_run(config["synthesis"])
    classifier_config = _check_classifier_run(config["classifier"], generator_settings)
    settings = {**config, **generator_settings, "classes": list(classifier_config["classes"])}
    cache = open_cache(settings, run.root, [settings["mri"], settings["pet"]])
    train, val = pair_loaders(
        cache, **_pair_settings(settings), classes=settings["classes"], crop=None, seed=config["trainer"]["seed"]
    )
    generator, discriminator_pet, discriminator_mri = build_gan(settings["model_options"])
    _load_gan(synthesis_checkpoint, generator, discriminator_pet, discriminator_mri)
    classifier = _trained_classifier(config["classifier"], classifier_config)
    gan = _gan_settings(config)
    module = JointModule(
        generator,
        discriminator_pet,
        discriminator_mri,
        classifier,
        settings["classes"],
        classification_weight=config["classification_weight"],
        lr_classifier=config["optimizer"]["lr_classifier"],
        **gan,
    )
    fit(module, run.root, config["trainer"], train_dataloaders=train, val_dataloaders=val)
    classifier_settings = {key: classifier_config[key] for key in ("model", "model_options", "dropout", "classes")}
    write_inference_settings(run.root, generator_settings | {"classifier": classifier_settings})
    return _select_and_evaluate(module, cache, settings, run)


def write_inference_settings(root: Path, settings: dict[str, Any]) -> None:
    """Write inference.json: modalities, downsample, model_options and, for a joint run, its classifier."""
    from brainlearn.atomic import write_json

    write_json(root / INFERENCE_FILE, settings)


def read_generator_run(source) -> tuple[Path, dict[str, Any]]:
    """The kept checkpoint (or the given .ckpt) of a finished ShareGAN / joint run and its inference.json.

    Raises:
        BrainlearnError: not such a run, or its inference.json is missing or incomplete.
    """
    from brainlearn.commands_train import read_inference_run

    checkpoint, settings, _ = read_inference_run(source, ("train sharegan", "train joint"), INFERENCE_KEYS)
    return checkpoint, settings


def _architecture(options: dict[str, Any]) -> dict[str, Any]:
    """The model options that shape the networks: all but ``checkpointing``, which only changes how a step runs
    (stage 2 may turn it on for whole volumes; runs from before it existed lack the key)."""
    return {key: value for key, value in options.items() if key != "checkpointing"}


def build_gan(options: dict[str, Any]):
    """ShareSynNet and its two discriminators from ``model_options``.

    The options: ``width`` (32) and ``heads`` (8) of the generator, ``downsamples`` (5) of the discriminators, and
    ``checkpointing`` (false): recompute the generator's levels in the backward pass instead of storing them,
    for whole 256³ volumes on a small GPU (the same result, more time).
    """
    from brainlearn.models.sharesynnet import ShareDiscriminator, ShareSynNet

    known = {"width", "heads", "downsamples", "checkpointing"}
    unknown = set(options) - known
    if unknown:
        raise BrainlearnError(f"model_options: unknown {sorted(unknown)}; ShareGAN takes {sorted(known)}.")
    width = options.get("width", 32)
    generator = ShareSynNet(
        width=width, heads=options.get("heads", 8), checkpointing=options.get("checkpointing", False)
    )
    discriminators = [ShareDiscriminator(width=width, downsamples=options.get("downsamples", 5)) for _ in range(2)]
    return generator, *discriminators


def _load_gan(path: Path, generator, discriminator_pet, discriminator_mri) -> None:
    """Copy the generator and both discriminators from the checkpoint of a ShareGAN / joint run."""
    from brainlearn.checkpoints import load_module_weights

    hint = "Use a ShareGAN run with the same model_options."
    for name, network in (
        ("generator", generator),
        ("discriminator_pet", discriminator_pet),
        ("discriminator_mri", discriminator_mri),
    ):
        load_module_weights(network, path, name, hint=hint)
    log.info("generator and discriminators initialized from %s", path)


def _check_classifier_run(source, generator: dict[str, Any]) -> dict[str, Any]:
    """The config of a ``train classify`` run that can join the generator: one channel, [-1, 1], same resolution."""
    run_dir, saved, _ = read_finished_run(source, ("train classify",))
    problems = []
    if saved.get("intensity", "zscore") != "range":
        problems.append(
            "it was trained with intensity=zscore; the generator works in [-1, 1]: retrain with intensity=range"
        )
    if len(saved["modalities"]) != 1:
        problems.append(f"it takes {saved['modalities']}; the joint model feeds it one volume, MRI or PET")
    if saved["downsample"] != generator["downsample"]:
        problems.append(f"downsample {saved['downsample']} differs from the ShareGAN run's {generator['downsample']}")
    if problems:
        raise BrainlearnError(f"{run_dir}: cannot join this classifier: {'; '.join(problems)}.")
    return saved


def _trained_classifier(source, saved: dict[str, Any]):
    """The network of a finished ``train classify`` run, with its kept weights."""
    from brainlearn.commands_train import _load_weights, build_module

    run_dir, _, selection = read_finished_run(source, ("train classify",))
    module = build_module("classify", {**saved, "init_from": None, "freeze_encoder": False})
    _load_weights(module, run_dir / "checkpoints" / selection["checkpoint"])
    return module.network


def _check_trainer(config: dict[str, Any]) -> None:
    if config["trainer"].get("accumulate_grad_batches", 1) != 1:
        raise BrainlearnError(
            "trainer.accumulate_grad_batches: ShareGAN accumulates its gradients itself; set accumulate "
            f"(now {config['accumulate']}) instead and leave trainer.accumulate_grad_batches at 1."
        )
    if not isinstance(config["accumulate"], int) or config["accumulate"] < 1:
        raise BrainlearnError(
            f"accumulate must be a positive integer (2 in document 000), not {config['accumulate']!r}."
        )


def _crop(config: dict[str, Any], cache) -> tuple[int, int, int] | None:
    """The training crop: as configured; at stage 1 by default half the padded volume (128³ of 256³)."""
    from brainlearn.data.datasets import PairDataset
    from brainlearn.data.loaders import PairTransform

    stage, crop = config["stage"], config["crop"]
    if stage not in (1, 2):
        raise BrainlearnError(f"stage must be 1 (random crops) or 2 (whole volumes), not {stage!r}.")
    if crop is not None:
        if not (isinstance(crop, list | tuple) and len(crop) == 3 and all(isinstance(n, int) and n > 0 for n in crop)):
            raise BrainlearnError(f"crop must be three positive integers such as [128, 128, 128], not {crop!r}.")
        if any(n % 16 for n in crop):
            raise BrainlearnError(f"crop sizes must be multiples of 16 (the generator halves four times), not {crop}.")
        return tuple(crop)
    if stage == 2:
        return None
    rows = PairDataset(cache, mri=config["mri"], pet=config["pet"], classes=None, split="train").rows
    padded = PairTransform(downsample=config["downsample"]).padded_shape(cache.shape(rows[0], config["mri"]))
    # at least 32: a 16-voxel crop leaves one voxel at the bottleneck, where InstanceNorm has nothing to normalize
    return tuple(min(n, max(32, n // 2 // 16 * 16)) for n in padded)


def _pair_settings(config: dict[str, Any]) -> dict[str, Any]:
    keys = ("mri", "pet", "batch_size", "downsample", "augment", "num_workers")
    return {key: config[key] for key in keys}


def _gan_settings(config: dict[str, Any]) -> dict[str, Any]:
    opt = config["optimizer"]
    return {
        "cycle_weight": config["cycle_weight"],
        "identity_weight": config["identity_weight"],
        "pool_size": config["pool_size"],
        "lr": opt["lr"],
        "betas": tuple(opt["betas"]),
        "accumulate": config["accumulate"],
        "decay_start": opt["decay_start"],
        "lr_decay": opt["lr_decay"],
        "seed": config["trainer"]["seed"],
    }


def _select_and_evaluate(module, cache, config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.synthesis_evaluation import evaluate_synthesis_run

    return evaluate_synthesis_run(module, cache, config, run.root)


_GAN_DEFAULTS = {
    **{key: _DATA_DEFAULTS[key] for key in ("cache", "table", "bids", "labels", "augment")},
    "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
    "cycle_weight": 10.0,
    "identity_weight": 0.3,  # relative to cycle_weight, as in the CycleGAN code
    "pool_size": 10,
    "accumulate": 2,
    "evaluate": {"splits": ["test", "external"], "n_bootstrap": 2000, "figure_rows": 4},
}
_OPTIONS = tuple(option for option in _DATA_OPTIONS if option[1] in ("cache", "table", "bids"))

SYNTHESIS_COMMANDS = (
    Command(
        name="sharegan",
        group="train",
        help="document 000's ShareGAN: one generator for MRI→PET and PET→MRI, trained on unpaired scans",
        defaults={
            **_GAN_DEFAULTS,
            "mri": "t1",
            "pet": "pet",
            "downsample": 1,  # average-pool the volumes by this factor (2: 2 mm → 4 mm)
            "stage": 1,  # 1: random crops (half the padded volume unless crop is set); 2: whole volumes
            "crop": None,
            "batch_size": 4,
            "init_from": None,  # stage 2: the stage-1 run
            # checkpointing: recompute the generator's levels in the backward pass (less memory, more time)
            "model_options": {"width": 32, "heads": 8, "downsamples": 5, "checkpointing": False},
            "optimizer": {"lr": 2e-4, "betas": [0.5, 0.999], "decay_start": 15, "lr_decay": 0.95},
            "trainer": {**TRAINER_DEFAULTS, "max_epochs": 80, "monitor": "val/ssim", "mode": "max", "patience": 20},
            "out": "runs/sharegan",
        },
        path_keys=("cache", "table", "bids", "init_from", "out"),
        run=run_train_sharegan,
        options=(
            *_OPTIONS,
            ("--stage", "stage", {"type": int, "choices": (1, 2), "help": "1: random crops, 2: whole volumes"}),
            ("--init-from", "init_from", {"metavar": "RUN", "help": "stage 2: start from this stage-1 run"}),
        ),
    ),
    Command(
        name="joint",
        group="train",
        help="document 000's stage 3: a ShareGAN run and a classifier run trained together",
        defaults={
            **_GAN_DEFAULTS,
            "synthesis": None,  # a train sharegan run
            "classifier": None,  # a train classify run with intensity=range
            "batch_size": 1,
            "classification_weight": 1.0,
            "optimizer": {"lr": 1e-6, "lr_classifier": 1e-5, "betas": [0.5, 0.999], "decay_start": 1, "lr_decay": 0.7},
            "trainer": {**TRAINER_DEFAULTS, "max_epochs": 15, "monitor": "val/auroc", "mode": "max", "patience": 5},
            "out": "runs/joint",
        },
        path_keys=("cache", "table", "bids", "synthesis", "classifier", "out"),
        run=run_train_joint,
        options=(
            *_OPTIONS,
            ("--synthesis", "synthesis", {"metavar": "RUN", "help": "a train sharegan run (stage 2)"}),
            ("--classifier", "classifier", {"metavar": "RUN", "help": "a train classify run (intensity=range)"}),
        ),
    ),
)
