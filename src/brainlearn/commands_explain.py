"""``brainlearn explain gradcam | attention | occlusion | noise``: importance maps of a trained model, checked.

For each session of the chosen split of ``--table`` / ``--bids`` / ``--cache``, the model of a ``train classify``
or ``train brain-age`` run is applied as at evaluation (same intensity scaling and downsampling) and explained;
the map, in [0, 1] (1: most important), is brought back to the cache's grid and written on the input image's grid.
The run folder then holds::

    maps/<participant>[_<session>]_desc-<map>_importance.nii.gz   one per session and map (attention writes two)
    population/desc-<map>_group-<all|diagnosis>_importance.nii.gz  means in MNI template space
    sessions.tsv    per session: diagnosis, age, the model's output, and the map's ROC-AUC against the truth
    regions.tsv     atlas structures ranked by mean importance, per population map
    figures/        overlays of the first sessions' maps and of the population maps (nilearn)
    metrics.json    per map: the mean ROC-AUC against each truth with a bootstrap interval, the hippocampus' rank

Scoring (``explain/truth.py``) needs the built-in cohort's truth folder, found beside the images or given as
``truth``; other data get maps, population maps and region tables without scores.
"""

from __future__ import annotations

import logging
from typing import Any

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")

METHODS = ("gradcam", "attention", "occlusion", "noise")
_COMMON = {
    "checkpoint": None,  # a `train classify` or `train brain-age` run folder (or a .ckpt in it)
    "cache": None,
    "table": None,
    "bids": None,
    "labels": ["CN", "MCI", "AD"],
    "split": "test",  # the sessions explained; all: every session
    "target": None,  # classifier: the class explained (default its positive class, the last); brain age: its output
    "batch_size": 2,
    "template_spacing": 2.0,  # mm: the MNI grid of the population maps and region table
    "truth": None,  # the cohort's derivatives/truth folder; None: looked for beside the images
    "figures": 4,  # sessions drawn as overlays
    "n_bootstrap": 2000,
    "seed": 0,
}
_SETTINGS = {
    "gradcam": {"layer": None, "plus": False},  # layer None: the deepest stage with maps of ≥ 6 voxels per axis
    "attention": {},
    "occlusion": {"patch": 8, "overlap": 0.5},
    # network: document 004's noise model trained on the training split; subject: optimized per session
    "noise": {"mode": "network", "epochs": 20, "steps": 300, "lr": None, "weight": 0.1, "max_sigma": 3.0},
}


def run_explain(method: str, config: dict[str, Any], run) -> dict[str, Any]:
    """Explain every session of the split, write the maps, population maps, region table and scores."""
    from brainlearn.commands_train import load_trained_model, open_cache
    from brainlearn.data.loaders import evaluation_dataset
    from brainlearn.explain.outputs import explain_sessions

    task, module, saved, _ = load_trained_model(config["checkpoint"])
    cache = open_cache(config, run.root, saved["modalities"])
    prepared = {"modalities": saved["modalities"], "downsample": saved["downsample"]}
    prepared["intensity"] = saved.get("intensity", "zscore")

    def sessions(split):
        return evaluation_dataset(cache, classes=None, split=None if split in (None, "all") else split, **prepared)

    dataset = sessions(config["split"])
    if len(dataset) == 0:
        raise BrainlearnError(f"no session of split {config['split']!r} in {cache.path}; pass --split all or test.")
    background = -1.0 if prepared["intensity"] == "range" else 0.0
    explain = _explainer(method, module.network.eval(), task, config, background, lambda: sessions("train"), run)
    target = _target(task, saved, config["target"])
    return explain_sessions(explain, module, dataset, task=task, target=target, saved=saved, config=config, run=run)


def _explainer(method: str, network, task: str, config: dict[str, Any], background: float, training, run):
    """A function (image (B, C, X, Y, Z), target) → {map name: maps (B, X, Y, Z) in [0, 1]}."""
    if method == "gradcam":
        from brainlearn.explain.gradcam import GradCAM, choose_layer

        state: dict[str, Any] = {}

        def gradcam(image, target):
            if not state:  # the default layer depends on the input's size: chosen on the first batch
                layer = config["layer"] or choose_layer(network, image)
                state["cam"] = GradCAM(network, layer, plus=bool(config["plus"]))
                log.info("Grad-CAM%s at layer %s", "++" if config["plus"] else "", layer)
            return {"gradcampp" if config["plus"] else "gradcam": state["cam"](image, target)}

        return gradcam
    if method == "attention":
        from brainlearn.explain.attention import attention_maps, require_awarenet

        require_awarenet(network)
        return lambda image, target: attention_maps(network, image)
    if method == "occlusion":
        from brainlearn.explain.occlusion import occlusion_map

        options = {"patch": config["patch"], "overlap": config["overlap"], "background": background}
        classifier = task == "classify"
        return lambda image, target: {
            "occlusion": occlusion_map(network, image, target=target, classifier=classifier, **options)
        }
    return _noise_explainer(network, config, background, training, run)


def _noise_explainer(network, config: dict[str, Any], background: float, training, run):
    """Document 004's noise model: trained once on the training split (``mode: network``), or per session."""
    import torch

    from brainlearn.explain.gradcam import OutputOf
    from brainlearn.explain.noise import noise_importance, optimize_noise

    if config["mode"] not in ("network", "subject"):
        raise BrainlearnError(f"mode must be 'network' or 'subject', not {config['mode']!r}.")
    predictor = OutputOf(network).eval()
    common = {"weight": config["weight"], "max_sigma": config["max_sigma"], "background": background}
    common |= {"seed": config["seed"], **({"lr": config["lr"]} if config["lr"] else {})}  # lr None: the method's
    if config["mode"] == "subject":

        def per_session(image, target):
            sigma = optimize_noise(predictor, image, steps=config["steps"], **common)
            return {"noise": noise_importance(sigma, image, max_sigma=config["max_sigma"], background=background)}

        return per_session
    model = _noise_model(predictor, config, common, training, run)

    def amortized(image, target):
        with torch.no_grad():
            sigma = model(image)
        return {"noise": noise_importance(sigma, image, max_sigma=config["max_sigma"], background=background)}

    return amortized


def _noise_model(predictor, config: dict[str, Any], common: dict[str, Any], training, run):
    """The noise model of this run folder (``noise_model.pt``), trained now if an earlier run did not finish it."""
    import torch

    from brainlearn.atomic import atomic_path
    from brainlearn.checkpoints import load_checkpoint
    from brainlearn.explain.noise import NoiseScaleNet, fit_noise_model

    path = run.root / "noise_model.pt"
    if path.exists():
        state = load_checkpoint(path)
        model = NoiseScaleNet(state["in_channels"], max_sigma=config["max_sigma"])
        model.load_state_dict(state["state_dict"])
        log.info("noise model read from %s", path)
        return model.eval()
    dataset = training()
    if len(dataset) == 0:
        raise BrainlearnError(
            "the noise model trains on the training split, and this cache has none; "
            "use mode=subject (optimized per session) or a table with a train split."
        )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(config["seed"])
    )
    images = _Images(loader)
    channels = len(dataset.modalities)
    log.info("training the noise model on %d sessions of the training split, %d epochs", len(dataset), config["epochs"])
    model = fit_noise_model(predictor, images, in_channels=channels, epochs=config["epochs"], **common)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "in_channels": channels}, tmp)
    return model.eval()


class _Images:
    """The image tensors of a DataLoader's batches, iterable once per epoch."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return (batch["image"] for batch in self.loader)


def _target(task: str, saved: dict[str, Any], target) -> int:
    """The output index explained: a class of the run (default its positive class, the last); 0 for brain age."""
    if task == "brain-age":
        return 0
    classes = list(saved["classes"])
    if target is None:
        return len(classes) - 1
    if target not in classes:
        raise BrainlearnError(f"target {target!r} is not a class of this model; its classes: {', '.join(classes)}.")
    return classes.index(target)


def _command(method: str, help_text: str, options=()) -> Command:
    return Command(
        name=method,
        group="explain",
        help=help_text,
        defaults={**_COMMON, **_SETTINGS[method], "out": f"runs/explain-{method}"},
        path_keys=("checkpoint", "cache", "table", "bids", "truth", "out"),
        run=lambda config, run: run_explain(method, config, run),
        options=(*_INPUTS, *options),
    )


_INPUTS = (
    ("--checkpoint", "checkpoint", {"metavar": "RUN_OR_CKPT", "help": "a train classify / brain-age run folder"}),
    ("--cache", "cache", {"metavar": "DIR", "help": "a brainlearn cache folder"}),
    ("--table", "table", {"metavar": "FILE", "help": "participants table"}),
    ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder"}),
    ("--split", "split", {"help": "the sessions explained (test); all: every session"}),
    ("--target", "target", {"help": "the class explained (default the positive class, e.g. AD)"}),
    ("--truth", "truth", {"metavar": "DIR", "help": "the cohort's derivatives/truth folder (default: found)"}),
)

EXPLAIN_COMMANDS = (
    _command(
        "gradcam",
        "Grad-CAM (--plus: Grad-CAM++) maps at a chosen layer of a 3D or slice-wise 2D network",
        (
            ("--layer", "layer", {"help": "module name (default: the deepest stage with maps of >= 6 voxels)"}),
            ("--plus", "plus", {"action": "store_const", "const": True, "help": "Grad-CAM++ weights"}),
        ),
    ),
    _command("attention", "AwareNet's local and slice attention written as volumes"),
    _command(
        "occlusion",
        "occlusion sensitivity: the change of the output when a cube of the input is hidden",
        (("--patch", "patch", {"type": int, "help": "edge of the hidden cube, voxels of the model's grid (8)"}),),
    ),
    _command(
        "noise",
        "document 004's noise-model importance: where the model tolerates little input noise",
        (("--mode", "mode", {"help": "network (trained on the training split) or subject (optimized per session)"}),),
    ),
)
