"""``brainlearn pretrain vqgan``, ``brainlearn pretrain diffusion`` and ``brainlearn sample``: document 003.

1. ``pretrain vqgan``: a 3D VQ-GAN learns to compress the prepared volumes (:mod:`brainlearn.generation`) into a
   grid of codebook vectors and back (:mod:`brainlearn.methods.vqgan`); the checkpoint with the lowest validation
   L1 is kept, and the held-out splits are scored (reconstruction PSNR / SSIM / MAE per modality).
2. ``pretrain diffusion --vqgan RUN``: the VQ-GAN encodes every training and validation volume once; a latent
   denoiser learns them (DDPM, :mod:`brainlearn.methods.latent_diffusion`), optionally conditioned on diagnosis and
   age; the kept checkpoint samples the evaluation set, scored for diversity (MS-SSIM between samples) and, with a
   feature network trained here (``evaluate.features``), Fréchet distance, precision and recall against real scans.
3. ``sample --checkpoint RUN --n N --steps K [--diagnosis AD --age 75]``: DDIM samples as NIfTI volumes on the
   training grid, a ``participants.tsv`` listing them (with a train / val split, so that ``pretrain inpaint
   --table`` can pretrain on them) and a montage.

Each run folder holds ``selection.json`` (the kept checkpoint) and ``inference.json`` (the data preparation, the
grid and the model settings that later commands need).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainlearn.cli import Command
from brainlearn.commands_pretrain import _INPUT_OPTIONS, _INPUTS
from brainlearn.errors import BrainlearnError
from brainlearn.trainer import TRAINER_DEFAULTS

log = logging.getLogger("brainlearn")


def run_pretrain_vqgan(config: dict[str, Any], run) -> dict[str, Any]:
    """Train the VQ-GAN, keep the checkpoint with the lowest validation L1, score the held-out reconstructions."""

    from brainlearn.commands_train import open_cache
    from brainlearn.generation import build_vqgan, grid_of, volumes
    from brainlearn.generation_evaluation import evaluate_reconstructions
    from brainlearn.methods.vqgan import VQGANModule
    from brainlearn.models.vqgan import build_discriminators

    cache = open_cache(config, run.root, config["modalities"])
    seed, channels = config["trainer"]["seed"], len(config["modalities"])
    train = volumes(cache, config, "train", augment=config["augment"], seed=seed)
    val = volumes(cache, config, "val")
    vqgan = build_vqgan(channels, config["model_options"])
    _check_multiple(config, vqgan.downsample)
    slice_discriminator, volume_discriminator = build_discriminators(channels, **config["discriminator"])
    opt = config["optimizer"]
    module = VQGANModule(
        vqgan,
        slice_discriminator,
        volume_discriminator,
        **{key: config[key] for key in ("l1_weight", "gan_weight", "feature_weight", "gan_start")},
        lr=opt["lr"],
        betas=tuple(opt["betas"]),
        seed=seed,
    )
    log.info("VQ-GAN on %d training volumes, validating on %d", len(train), len(val))
    _fit(module, train, val, config, run)
    settings = {key: config[key] for key in ("modalities", "downsample", "multiple", "model_options")}
    best = _finish_run(run.root, settings | {"compression": vqgan.downsample} | grid_of(cache, config))
    metrics = evaluate_reconstructions(best, cache, config, run.root)
    log.info("look at: %s — pass the run to pretrain diffusion --vqgan", run.root / "evaluation")
    return metrics


def run_pretrain_diffusion(config: dict[str, Any], run) -> dict[str, Any]:
    """Encode the volumes with a trained VQ-GAN, train the latent denoiser, sample and score the kept checkpoint."""
    import torch

    from brainlearn.commands_train import open_cache
    from brainlearn.generation import encode_latents, latent_scale, load_vqgan, to_model_space, volumes
    from brainlearn.generation_evaluation import evaluate_samples

    vqgan, settings = load_vqgan(config["vqgan"])
    vqgan.to("cuda" if torch.cuda.is_available() else "cpu")  # encodes every volume once, decodes the samples
    cache = open_cache(config, run.root, settings["modalities"])
    classes = _classes(config)
    train = encode_latents(vqgan, volumes(cache, settings, "train", classes=classes), flips=config["flips"])
    val = encode_latents(vqgan, volumes(cache, settings, "val", classes=classes))
    scale = latent_scale(config["latent_scale"], train)
    for item in (*train, *val):
        item["latent"] = to_model_space(vqgan, item["latent"][None], scale)[0]
    module = build_diffusion_module(config, classes, embedding_dim=train[0]["latent"].shape[0], settings=settings)
    log.info("latent diffusion on %d training latents %s, validating on %d", len(train), _shape(train), len(val))
    _fit(module, train, val, config, run)
    diffusion = {
        "vqgan": str(Path(config["vqgan"]).absolute()),
        "classes": list(classes) if classes else None,
        "conditions": list(config["conditions"]),
        "denoiser_options": config["model_options"],
        "timesteps": config["timesteps"],
        "latent_shape": list(train[0]["latent"].shape),
        "latent_scale": scale,
    }
    best = _finish_run(run.root, settings | diffusion)
    metrics = evaluate_samples(module, best, vqgan, cache, settings | diffusion, config, run.root)
    log.info("look at: %s — then brainlearn sample --checkpoint %s", run.root / "evaluation", run.root)
    return metrics


def build_diffusion_module(config: dict[str, Any], classes, *, embedding_dim: int, settings: dict[str, Any]):
    """The latent diffusion module of a ``pretrain diffusion`` config: a Denoiser3D wrapped in the process."""
    from brainlearn.generation import check_volume_size
    from brainlearn.methods.latent_diffusion import LatentDiffusionModule
    from brainlearn.models.denoiser import Denoiser3D

    options = config["model_options"]  # every key has a default, so the config refused unknown ones
    check_volume_size(settings, len(options["multipliers"]))
    denoiser = Denoiser3D(
        embedding_dim,
        num_classes=len(classes) if "diagnosis" in config["conditions"] else 0,
        age="age" in config["conditions"],
        **options,
    )
    return LatentDiffusionModule(
        denoiser,
        timesteps=config["timesteps"],
        loss=config["loss"],
        lr=config["optimizer"]["lr"],
        ema_decay=config["ema_decay"],
        condition_dropout=config["condition_dropout"],
        seed=config["trainer"]["seed"],
    )


def run_sample(config: dict[str, Any], run) -> dict[str, Any]:
    """DDIM samples of a diffusion run as NIfTI volumes on the training grid, a participants.tsv and a montage."""
    from brainlearn.sampling import load_sampler, write_samples

    sampler = load_sampler(config["checkpoint"], precision=config["precision"], compile=config["compile"])
    return write_samples(sampler, config, run)


def _fit(module, train, val, config: dict[str, Any], run) -> None:
    """Train ``module`` on the ``train`` items (shuffled, the last partial batch dropped) and validate on ``val``."""
    from brainlearn.data.loaders import make_loader
    from brainlearn.trainer import fit

    common = {"batch_size": config["batch_size"], "num_workers": config["num_workers"]}
    train = make_loader(train, shuffle=True, drop_last=len(train) > config["batch_size"], **common)
    fit(module, run.root, config["trainer"], train_dataloaders=train, val_dataloaders=make_loader(val, **common))


def _classes(config: dict[str, Any]) -> tuple[str, ...] | None:
    conditions, classes = config["conditions"], config["classes"]
    if not isinstance(conditions, list | tuple) or not set(conditions) <= {"diagnosis", "age"}:
        raise BrainlearnError(f"conditions must be a list of 'diagnosis' and/or 'age' (or []), not {conditions!r}.")
    if "diagnosis" not in conditions:
        return None
    if not isinstance(classes, list | tuple) or len(classes) < 2 or len(set(classes)) != len(classes):
        raise BrainlearnError(
            f"classes must list at least two distinct diagnoses, e.g. [CN, MCI, AD], not {classes!r}."
        )
    return tuple(classes)


def _check_multiple(config: dict[str, Any], compression: int) -> None:
    multiple = config["multiple"]
    if not isinstance(multiple, int) or multiple < 1 or multiple % compression:
        raise BrainlearnError(
            f"multiple must be a positive multiple of the VQ-GAN's compression ({compression}), not {multiple!r}; "
            "16 suits a compression of 4 with a denoiser that halves twice in-plane."
        )


def _finish_run(root, settings: dict[str, Any]):
    """Write selection.json (the kept checkpoint) and inference.json; return the kept checkpoint's path."""
    from brainlearn.atomic import write_json
    from brainlearn.commands_train import INFERENCE_FILE, _kept_checkpoint

    best = _kept_checkpoint(root)
    write_json(root / INFERENCE_FILE, settings)
    write_json(root / "selection.json", {"checkpoint": best.name})
    return best


def _shape(latents: list[dict]) -> str:
    return "×".join(str(n) for n in latents[0]["latent"].shape)


_VQGAN_TRAINER = {**TRAINER_DEFAULTS, "max_epochs": 100, "monitor": "val/l1", "mode": "min"}
_DIFFUSION_TRAINER = {**TRAINER_DEFAULTS, "max_epochs": 200, "monitor": "val/loss", "mode": "min"}

GENERATION_COMMANDS = (
    Command(
        name="vqgan",
        group="pretrain",
        help="document 003's 3D VQ-GAN: compress volumes into codebook latents (EMA codebook, 2D + 3D discriminators)",
        defaults={
            **_INPUTS,
            "modalities": ["t1"],  # channels of one volume; [t1, t2, flair] to pretrain a lesion segmenter later
            "downsample": 1,  # average-pool the cache by this factor first (2: 2 mm → 4 mm, the CPU configs)
            "multiple": 16,  # pad volumes to this many voxels per axis (compression × the denoiser's halvings)
            "augment": True,  # left-right flips
            "batch_size": 2,
            "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
            # document 003's ADNI setting: 64³ → 8 × 32³ latents, 16,384 codes; downsample is the compression per axis
            "model_options": {
                "channels": 16,
                "downsample": 2,
                "embedding_dim": 8,
                "n_codes": 16384,
                "decay": 0.99,  # of the codebook's moving averages
                "commitment": 0.25,
                "restart_threshold": 1.0,  # codes used less (moving count) are restarted from encoder outputs
            },
            "discriminator": {"channels": 64, "layers": 3},
            "l1_weight": 4.0,
            "gan_weight": 1.0,
            "feature_weight": 4.0,
            "gan_start": 10000,  # autoencoder steps before the discriminators join
            "optimizer": {"lr": 3e-4, "betas": [0.5, 0.9]},
            "trainer": _VQGAN_TRAINER,
            "evaluate": {"splits": ["test"], "n_bootstrap": 2000, "figure_rows": 4},
            "out": "runs/pretrain-vqgan",
        },
        path_keys=("cache", "table", "bids", "out"),
        run=run_pretrain_vqgan,
        options=_INPUT_OPTIONS,
    ),
    Command(
        name="diffusion",
        group="pretrain",
        help="document 003's latent diffusion on a VQ-GAN's latents (DDPM training, DDIM sampling), conditional",
        defaults={
            **_INPUTS,
            "vqgan": None,  # a pretrain vqgan run
            "conditions": ["diagnosis", "age"],  # [] for document 003's unconditional model
            "classes": ["CN", "MCI", "AD"],
            "flips": True,  # train also on the latents of mirrored volumes
            # codebook: document 003's min-max scaling by the codebook's range; standardize: per-channel z-score
            "latent_scale": "codebook",
            "model_options": {
                "channels": 64,
                "multipliers": [1, 2, 4, 8],
                "heads": 8,
                "head_channels": 32,
                "groups": 8,
            },
            "timesteps": 300,  # document 003: cosine schedule, T = 300, L1 on the noise
            "loss": "l1",
            "condition_dropout": 0.1,  # share of steps trained unconditioned (classifier-free guidance)
            "ema_decay": 0.995,
            "batch_size": 10,
            "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
            "optimizer": {"lr": 1e-4},
            "trainer": _DIFFUSION_TRAINER,
            # samples scored against the real volumes of split; features: a train brain-age / classify run whose
            # backbone gives the feature space of the Fréchet distance, precision and recall
            "evaluate": {"split": "test", "samples": 8, "steps": 50, "eta": 0.0, "guidance": 1.0, "features": None},
            "out": "runs/pretrain-diffusion",
        },
        path_keys=("cache", "table", "bids", "vqgan", "out"),
        run=run_pretrain_diffusion,
        options=(*_INPUT_OPTIONS, ("--vqgan", "vqgan", {"metavar": "RUN", "help": "a pretrain vqgan run"})),
    ),
    Command(
        name="sample",
        help="new volumes from a diffusion run: NIfTI on the training grid, participants.tsv, montage",
        defaults={
            "checkpoint": None,  # a pretrain diffusion run
            "n": 8,
            "steps": 50,  # DDIM steps
            "eta": 0.0,  # 0: deterministic DDIM; 1 with steps = timesteps: DDPM
            "guidance": 1.0,  # classifier-free guidance scale (1: plain conditional sampling)
            "diagnosis": None,
            "age": None,
            "seed": 0,
            "batch_size": 4,
            "precision": "auto",  # bf16 autocast on a GPU with bf16 (auto), or fp32 / bf16
            "compile": None,  # torch.compile the denoiser: null (off), true or a mode (reduce-overhead: CUDA graphs)
            "val_fraction": 0.1,  # share of the samples marked split=val in participants.tsv
            "out": "runs/samples",
        },
        path_keys=("checkpoint", "out"),
        run=run_sample,
        options=(
            ("--checkpoint", "checkpoint", {"metavar": "RUN", "help": "a pretrain diffusion run"}),
            ("--n", "n", {"type": int, "help": "number of volumes"}),
            ("--steps", "steps", {"type": int, "help": "DDIM steps"}),
            ("--diagnosis", "diagnosis", {"help": "condition on this diagnosis (e.g. AD)"}),
            ("--age", "age", {"type": float, "help": "condition on this age in years"}),
            ("--seed", "seed", {"type": int, "help": "seed of the noise"}),
        ),
    ),
)
