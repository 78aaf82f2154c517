"""``brainlearn demo``: the pipeline so far on the built-in cohort, in a few minutes on a laptop CPU.

1. generate a small cohort from real anatomy (T1, T2, FLAIR, FDG-PET, lesions, a held-out site) with its truth;
2. read it as a BIDS folder into a checked participants table (subject-level splits come with it);
3. cache T1 and PET into the memory-mapped store the training methods read, and time the cache;
4. train a small AwareNet (AD vs CN) and a small SFCN brain-age model on the cached T1s, each with its
   checkpoint, threshold or bias correction chosen on validation, and evaluate both on the test split;
5. train a small 2D U-Net on the participants with lesions and evaluate it lesion-wise on the test split;
6. pretrain an SFCN with SimCLR on the unlabelled training T1s, then train AD vs CN from it and from scratch on
   the same 10 % and 100 % of the labelled participants: the label-efficiency plot;
7. document 000: a small ShareGAN (on whole unpaired T1 and PET volumes), then joint training with step 4's
   AwareNet; diagnosis from MRI, from synthesized PET and from both next to the MRI-only AwareNet, and synthesized
   PET for every held-out participant (the external site has no PET of its own in practice);
8. document 003: a small VQ-GAN and a latent diffusion model conditioned on diagnosis and age, scored in step 4's
   brain-age network's feature space, and a few AD volumes sampled from it;
9. explanation maps of step 4's models (Grad-CAM and AwareNet's attention for the classifier, Grad-CAM and
   document 004's noise model for brain age), population maps, atlas regions ranked, each map scored against the
   cohort's truth (where atrophy was applied; the structures that change most with age);
10. the HTML report of every run above (``brainlearn report``): metrics with intervals, curves, figures and a 3D
   viewer of the masks, synthesized PET, maps and samples, in ``report/index.html``, the last line printed.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def run_demo(config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.cohort.generate import generate_cohort
    from brainlearn.cohort.summary import measured_effects, read_truths, save_cohort_montage
    from brainlearn.data.bids import read_bids
    from brainlearn.data.cache import Cache, build_cache
    from brainlearn.data.cache_bench import benchmark_cache_read
    from brainlearn.data.tables import write_table

    cohort_dir = run.root / "cohort"
    report = generate_cohort(
        cohort_dir, subjects=config["subjects"], spacing=config["spacing"], seed=config["seed"], preset="all"
    )
    montage = save_cohort_montage(cohort_dir, report.table, run.figures / "cohort_montage.png")
    effects = measured_effects(read_truths(cohort_dir, report.table))
    log.info("step 1/10: cohort of %d subjects in %.0f s: %s", report.n_subjects, report.seconds, cohort_dir)
    for diagnosis in ("CN", "MCI", "AD"):
        if f"cohort/{diagnosis}/n" in effects:
            log.info(
                "  %-3s n=%-3d hippocampus × %.2f from the diagnosis, ventricles × %.2f in all",
                diagnosis,
                effects[f"cohort/{diagnosis}/n"],
                effects[f"cohort/{diagnosis}/hippocampus_disease_factor"],
                effects[f"cohort/{diagnosis}/ventricle_factor"],
            )

    table = read_bids(cohort_dir)
    table_path = write_table(table, run.root / "participants.tsv")
    log.info("step 2/10: participants table (splits by participant): %s", table_path)

    cached = build_cache(table, run.root / "cache", modalities=("t1", "pet"), dtype="float16", progress=True)
    speed = benchmark_cache_read(table, Cache(run.root / "cache"), modality="t1", repeats=2)
    log.info(
        "step 3/10: cached T1 + PET of %d subjects; reads %.0f× faster than the .nii.gz files",
        cached.n_volumes,
        speed["ratio"],
    )
    trained = _train_models(run, config)
    _log_results(trained)
    log.info("look at: %s (T1, T2, FLAIR, PET of four subjects)", montage)
    log.info(
        "         %s, %s (metrics with 95 %% intervals, predictions, ROC, confusion matrix, brain-age plot)",
        run.root / "classify" / "evaluation" / "test",
        run.root / "brain-age" / "evaluation" / "test",
    )
    log.info("         %s (participants), %s (measured effects)", table_path, run.metrics_path)
    log.info("         %s (ground truth: atrophy and hypometabolism maps)", cohort_dir / "derivatives" / "truth")
    log.info(
        "         %s (AD vs CN from SimCLR pretraining and from scratch, 10 %% and 100 %% of the labels)",
        run.root / "label-efficiency" / "figures" / "label_efficiency.png",
    )
    log.info(
        "         %s (real MRI, synthesized PET, real PET), %s (PET synthesized for the held-out participants)",
        run.root / "joint" / "evaluation" / "test" / "synthesis.png",
        run.root / "synthesized",
    )
    log.info(
        "         %s (VQ-GAN reconstructions), %s (samples next to real scans), %s (AD volumes sampled at 75 years)",
        run.root / "vqgan" / "evaluation" / "test" / "reconstruction.png",
        run.root / "diffusion" / "evaluation" / "test" / "samples.png",
        run.root / "samples" / "figures" / "samples.png",
    )
    log.info(
        "         %s (importance maps, population maps over the MNI template, regions.tsv, scores vs the truth)",
        run.root / "explain",
    )
    metrics = run.write_metrics(  # before the report, which shows them
        {
            **effects,
            "demo/cohort_seconds": report.seconds,
            "demo/cached": cached.n_volumes,
            **{f"demo/cache_read/{key}": value for key, value in speed.items()},
            **trained,
        }
    )
    return metrics | _report(run)


def _report(run) -> dict[str, Any]:
    """Step 10: the report of the demo folder, and its path as the last thing to look at."""
    from brainlearn.errors import BrainlearnError

    out = run.root / "report"
    try:
        result = _sub_run("report", {"runs": [str(run.root)], "out": str(out)}, [])
    except BrainlearnError as error:
        log.warning("step 10/10: no report: %s", error)
        return {}
    log.info("step 10/10: open the report in a browser: %s", (out / "index.html").resolve())
    return {f"demo/{key}": value for key, value in result.items()}


def _train_models(run, config: dict[str, Any]) -> dict[str, Any]:
    """Step 4: the CPU configs of a classifier and a brain-age model, trained and evaluated in sub-run folders."""
    from brainlearn.errors import BrainlearnError

    epochs = config["epochs"]
    settings = {
        "classify": [
            "model_options={width: 16, dropout: 0.5}",
            "downsample=2",
            "batch_size=4",
            "optimizer.lr=3.0e-4",
            "intensity=range",  # document 000's [-1, 1], so that step 7 can train it jointly with the generator
            f"trainer.max_epochs={epochs}",
            "trainer.patience=null",
        ],
        "brain-age": [
            "model_options={channels: [8, 16, 32, 64, 64, 32]}",
            "downsample=2",
            "batch_size=4",
            f"trainer.max_epochs={epochs}",
            "trainer.patience=null",
        ],
    }
    metrics: dict[str, Any] = {}
    for name in ("classify", "brain-age"):
        overrides = [
            *settings[name],
            "trainer.progress_bar=false",
            f"evaluate.n_bootstrap={config['n_bootstrap']}",
            "model=" + ("awarenet" if name == "classify" else "sfcn"),
        ]
        flags = {"cache": str(run.root / "cache"), "out": str(run.root / name)}
        try:
            result = _sub_run(f"train {name}", flags, overrides)
        except BrainlearnError as error:  # e.g. a cohort too small to hold both classes in every split
            log.warning("step 4/10: %s not trained: %s (generate more subjects)", name, error)
            continue
        metrics |= {f"demo/{name}/{key}": value for key, value in result.items() if key.startswith("test/")}
        log.info("step 4/10: %s trained and evaluated: %s", name, run.root / name / "evaluation" / "test")
    later = _segment_lesions(run, config) | _label_efficiency(run, config) | _synthesis(run, config)
    return metrics | later | _generation(run, config) | _explanations(run, config)


def _segment_lesions(run, config: dict[str, Any]) -> dict[str, Any]:
    """Step 5: a small 2D U-Net (ResNet-34 encoder) on the participants with lesions, evaluated lesion-wise."""
    import nibabel as nib
    import numpy as np

    from brainlearn.data.bids import read_bids
    from brainlearn.data.cache import build_cache
    from brainlearn.errors import BrainlearnError

    table = read_bids(run.root / "cohort")
    has_lesions = [isinstance(path, str) and bool(np.asarray(nib.load(path).dataobj).any()) for path in table["mask"]]
    with_lesions = table[has_lesions]  # an empty mask would score a perfect Dice for predicting nothing
    build_cache(with_lesions, run.root / "lesion-cache", modalities=("t1", "t2", "flair", "mask"), progress=True)
    overrides = [
        "model_options={decoder_channels: [64, 32, 16, 16, 8]}",
        "samples_per_epoch=256",
        "val_samples=128",
        "lesion_fraction=0.8",
        "pos_weight=5",
        # 6 at the default 8: in the demo 5 gave test Dice 0.58 against 0.71 (2026-12-03), 4 left val Dice at 0
        f"trainer.max_epochs={max(1, 3 * config['epochs'] // 4)}",
        "trainer.progress_bar=false",
        f"evaluate.n_bootstrap={config['n_bootstrap']}",
    ]
    flags = {"cache": str(run.root / "lesion-cache"), "out": str(run.root / "segment")}
    try:
        result = _sub_run("train segment", flags, overrides)
    except BrainlearnError as error:
        log.warning("step 5/10: lesions not segmented: %s (generate more subjects)", error)
        return {}
    log.info("step 5/10: lesions segmented: %s", run.root / "segment" / "evaluation" / "test")
    return {f"demo/segment/{key}": value for key, value in result.items() if key.startswith("test/")}


def _label_efficiency(run, config: dict[str, Any]) -> dict[str, Any]:
    """Step 6: brief SimCLR pretraining, then scratch vs pretrained AD vs CN at 10 % and 100 % of the labels."""
    from brainlearn.errors import BrainlearnError

    # half the epochs of step 4: the demo's ten minutes (SimCLR's loss still falls, see docs/benchmarks.md)
    epochs, backbone = max(1, config["epochs"] // 2), "model_options={channels: [8, 16, 32, 64, 64, 32]}"
    common = [backbone, "trainer.progress_bar=false", "downsample=2"]
    steps = (
        ("pretrain simclr", "pretrain", [f"trainer.max_epochs={epochs}"]),
        (
            "experiment label-efficiency",
            "label-efficiency",
            [
                "fractions=[10, 100]",
                "seeds=1",
                f"trainer.max_epochs={epochs}",
                f"n_bootstrap={min(200, config['n_bootstrap'])}",
            ],
        ),
    )
    result: dict[str, Any] = {}
    for name, folder, overrides in steps:
        flags = {"cache": str(run.root / "cache"), "out": str(run.root / folder)}
        if folder == "label-efficiency":
            flags["pretrained"] = result["pretrain/checkpoint"]
        try:
            result |= _sub_run(name, flags, [*common, *overrides])
        except BrainlearnError as error:
            log.warning("step 6/10: %s not run: %s (generate more subjects)", name, error)
            return {}
    log.info(
        "step 6/10: pretrained and compared: %s", run.root / "label-efficiency" / "figures" / "label_efficiency.png"
    )
    return {f"demo/{key}": value for key, value in result.items() if key.startswith("label_efficiency/")}


def _synthesis(run, config: dict[str, Any]) -> dict[str, Any]:
    """Step 7: ShareGAN stage 1 and joint training with step 4's AwareNet; synthesized PET for held-out sessions."""
    from brainlearn.data.tables import read_table, write_table
    from brainlearn.errors import BrainlearnError

    if not (run.root / "classify" / "selection.json").exists():
        log.warning("step 7/10: skipped: step 4 trained no classifier to join")
        return {}
    quiet = ["trainer.progress_bar=false", "trainer.patience=null", f"evaluate.n_bootstrap={config['n_bootstrap']}"]
    # 4 mm volumes are small enough to train on whole (stage 2 settings): crops of them (stage 1) would teach the
    # generator's InstanceNorm statistics of crops, not of the whole volumes it is then used on. One epoch at 10×
    # document 000's learning rate reaches a validation SSIM of about 0.66 (0.03 after two at 2e-4).
    gan = ["downsample=2", "model_options={width: 4, heads: 8, downsamples: 3}", "stage=2", "batch_size=1"]
    gan += ["accumulate=1", "optimizer.lr=2.0e-3", "trainer.max_epochs=1", "optimizer.decay_start=100"]
    joint = ["optimizer.lr=1.0e-5", "optimizer.lr_classifier=1.0e-4", "trainer.max_epochs=1"]  # ×10 the paper's
    table = read_table(run.root / "participants.tsv")
    held_out = write_table(table[table["split"].isin(["test", "external"])], run.root / "held-out.tsv")
    cache, root = str(run.root / "cache"), run.root
    try:
        _sub_run("train sharegan", {"cache": cache, "out": str(root / "sharegan")}, [*gan, *quiet])
        flags = {"cache": cache, "synthesis": str(root / "sharegan"), "classifier": str(root / "classify")}
        result = _sub_run("train joint", flags | {"out": str(root / "joint")}, [*joint, *quiet])
        flags = {"checkpoint": str(root / "joint"), "table": str(held_out), "out": str(root / "synthesized")}
        synthesized = _sub_run("synthesize", flags, [])
    except BrainlearnError as error:
        log.warning("step 7/10: not run: %s (generate more subjects)", error)
        return {}
    log.info("step 7/10: ShareGAN and joint model trained, PET synthesized: %s", root / "joint" / "evaluation" / "test")
    metrics = {f"demo/joint/{key}": value for key, value in result.items() if key.startswith("test/")}
    return metrics | {"demo/synthesized": synthesized.get("synthesize/n", 0)}


def _generation(run, config: dict[str, Any]) -> dict[str, Any]:
    """Step 8: VQ-GAN → latent diffusion (diagnosis + age) on the cached T1s, scored, then AD volumes sampled."""
    from brainlearn.errors import BrainlearnError

    quiet = ["trainer.progress_bar=false", "trainer.patience=null"]
    vqgan = ["downsample=2", "model_options={channels: 8, downsample: 4, embedding_dim: 4, n_codes: 128}"]
    vqgan += [
        "discriminator={channels: 8, layers: 2}",
        f"trainer.max_epochs={max(1, config['epochs'] // 2)}",
        f"evaluate.n_bootstrap={config['n_bootstrap']}",
    ]
    diffusion = ["model_options={channels: 16, multipliers: [1, 2, 4], heads: 2, head_channels: 8}", "timesteps=100"]
    diffusion += [
        "optimizer.lr=1.0e-3",
        "batch_size=8",
        f"trainer.max_epochs={config['epochs']}",
        "evaluate.samples=8",
        "evaluate.steps=20",
    ]
    if (run.root / "brain-age" / "selection.json").exists():
        diffusion.append(f"evaluate.features={run.root / 'brain-age'}")
    cache, root = str(run.root / "cache"), run.root
    try:
        _sub_run("pretrain vqgan", {"cache": cache, "out": str(root / "vqgan")}, [*vqgan, *quiet])
        flags = {"cache": cache, "vqgan": str(root / "vqgan"), "out": str(root / "diffusion")}
        scores = _sub_run("pretrain diffusion", flags, [*diffusion, *quiet])
        flags = {"checkpoint": str(root / "diffusion"), "out": str(root / "samples")}
        _sub_run("sample", flags, ["n=4", "steps=20", "diagnosis=AD", "age=75"])
    except BrainlearnError as error:
        log.warning("step 8/10: not run: %s (generate more subjects)", error)
        return {}
    log.info("step 8/10: VQ-GAN and latent diffusion trained, AD volumes sampled: %s", root / "samples")
    return {f"demo/generation/{key}": value for key, value in scores.items()}


def _explanations(run, config: dict[str, Any]) -> dict[str, Any]:
    """Step 9: maps of step 4's classifier and brain-age model on the test split, scored against the truth."""
    from brainlearn.errors import BrainlearnError

    plans = {
        "classify": (("gradcam", []), ("attention", [])),
        # 2 epochs of the noise model (about 25 s on the demo's training split): the 10-minute budget; its map is
        # still diffuse then (docs/benchmarks.md has 8 epochs on 200 participants)
        "brain-age": (("gradcam", []), ("noise", ["epochs=2"])),
    }
    common = [f"n_bootstrap={config['n_bootstrap']}", "figures=2"]
    metrics: dict[str, Any] = {}
    for model, methods in plans.items():
        if not (run.root / model / "selection.json").exists():
            continue
        for method, overrides in methods:
            out = run.root / "explain" / f"{model}-{method}"
            flags = {"checkpoint": str(run.root / model), "cache": str(run.root / "cache"), "out": str(out)}
            try:
                result = _sub_run(f"explain {method}", flags, [*common, *overrides])
            except BrainlearnError as error:
                log.warning("step 9/10: %s of %s not made: %s", method, model, error)
                continue
            metrics |= {f"demo/explain/{model}/{key.removeprefix('explain/')}": v for key, v in result.items()}
    if metrics:
        log.info("step 9/10: explanation maps of the classifier and the brain-age model: %s", run.root / "explain")
    return metrics


def _sub_run(name: str, flags: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Run the command ``name`` (e.g. ``"train joint"``) into ``flags['out']``; its metrics."""
    from brainlearn.commands import COMMANDS
    from brainlearn.config import load_config
    from brainlearn.runs import Run

    command = next(c for c in COMMANDS if c.full_name == name)
    sub = load_config(command.defaults, flags=flags, overrides=overrides, path_keys=command.path_keys)
    with Run(command.run_folder(sub) if command.run_folder else sub["out"], name, sub) as sub_run:
        result = command.run(sub, sub_run) or {}
        sub_run.write_metrics(result)
    return result


def _log_results(trained: dict[str, Any]) -> None:
    """The headline numbers of steps 4–6, with their intervals where there are any."""
    for key, label, unit in (
        ("demo/classify/test/roc_auc", "AwareNet AD vs CN, test ROC-AUC", ""),
        ("demo/classify/test/balanced_accuracy", "AwareNet AD vs CN, test balanced accuracy", ""),
        ("demo/brain-age/test/mae", "SFCN brain age, test MAE (CN)", " years"),
        ("demo/segment/test/dice", "U-Net lesion segmentation, test Dice", ""),
        ("demo/segment/test/lesion_f1", "U-Net lesion segmentation, test lesion-wise F1", ""),
    ):
        if key in trained:
            estimate, lower, upper = trained[key]
            log.info("result: %s %.2f%s (95 %% CI %.2f–%.2f)", label, estimate, unit, lower, upper)
    for fraction in (10, 100):
        scores = {
            arm: trained.get(f"demo/label_efficiency/{arm}/{fraction}/roc_auc") for arm in ("scratch", "pretrained")
        }
        if None not in scores.values():
            log.info(
                "result: SFCN AD vs CN, %d %% of the labels, test ROC-AUC: from scratch %.2f, SimCLR-pretrained %.2f",
                fraction,
                scores["scratch"],
                scores["pretrained"],
            )
    joint = {name: trained.get(f"demo/joint/test/{name}/roc_auc") for name in ("mri", "synthesized", "both")}
    if None not in joint.values():
        log.info(
            "result: AD vs CN test ROC-AUC after joint training: from MRI %.2f, from synthesized PET %.2f, both %.2f",
            joint["mri"][0],
            joint["synthesized"][0],
            joint["both"][0],
        )
    if "demo/joint/test/ssim" in trained:
        ssim, psnr = trained["demo/joint/test/ssim"], trained["demo/joint/test/psnr"]
        reference = trained.get("demo/joint/test/reference/ssim", [float("nan")])
        log.info(
            "result: synthesized PET against the real PET (test): SSIM %.2f, PSNR %.1f dB; the mean training PET "
            "scores SSIM %.2f (one epoch of training here; docs/benchmarks.md has longer runs)",
            ssim[0],
            psnr[0],
            reference[0],
        )
    if "demo/generation/test/samples/diversity_ms_ssim" in trained:
        log.info(
            "result: sampled T1 volumes (test): MS-SSIM between samples %.2f (real scans %.2f), Fréchet distance in "
            "the brain-age network's features %.3g (real training vs test scans %.3g)",
            trained["demo/generation/test/samples/diversity_ms_ssim"],
            trained["demo/generation/test/samples/real_diversity_ms_ssim"],
            trained.get("demo/generation/test/samples/features_frechet_distance", float("nan")),
            trained.get("demo/generation/test/samples/real_train_frechet_distance", float("nan")),
        )
    for model, method, truth, group in (
        ("classify", "gradcam", "disease", "AD"),
        ("classify", "attention", "disease", "AD"),
        ("brain-age", "gradcam", "ageing", "all"),
        ("brain-age", "noise", "ageing", "all"),
    ):
        auc = trained.get(f"demo/explain/{model}/{method}/auc/{truth}")
        rank = trained.get(f"demo/explain/{model}/{method}/hippocampus_rank/{group}")
        if auc is not None:
            log.info(
                "result: %s %s map against the cohort's %s truth: ROC-AUC %.2f (95 %% CI %.2f–%.2f); hippocampus "
                "ranks %s of %s atlas structures",
                model, method, truth, *auc, rank, trained.get(f"demo/explain/{model}/regions"),
            )  # fmt: skip
    log.info(
        "         (a demo-sized cohort: the intervals show how little a test split of a few participants "
        "says; docs/benchmarks.md has the 200-participant figures and the volume baseline next to them)"
    )
