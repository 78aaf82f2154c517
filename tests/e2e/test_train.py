"""``brainlearn train classify | brain-age`` and ``brainlearn evaluate`` end to end on a tiny built-in cohort."""

import json

import pandas as pd
import pytest

from brainlearn.cli import main
from brainlearn.metrics import choose_threshold


def run(*args) -> int:
    return main(["-q", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "cohort"
    assert run("cohort", "--out", root, "--subjects", 30, "--spacing", 4, "--preset", "ad", "--seed", 1) == 0
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    internal = table["split"] != "external"
    table.loc[internal, "split"] = "train"
    for split in ("val", "test"):  # two of each diagnosis, so that every metric is defined
        for diagnosis in ("CN", "MCI", "AD"):
            chosen = table[internal & (table["split"] == "train") & (table["diagnosis"] == diagnosis)].index[:2]
            table.loc[chosen, "split"] = split
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "evaluate.n_bootstrap=100", "batch_size=4"]


def test_classify_trains_selects_on_validation_and_evaluates(cohort, tmp_path):
    out = tmp_path / "classify"
    assert (
        run(
            "train",
            "classify",
            "--bids",
            cohort,
            "--out",
            out,
            "--model",
            "resnet3d",
            "model_options={widen_factor: 0.125}",
            *FAST,
        )
        == 0
    )
    selection = json.loads((out / "selection.json").read_text())
    val = pd.read_csv(out / "evaluation" / "val" / "predictions.tsv", sep="\t")
    assert set(val["participant_id"]) <= set(
        pd.read_csv(cohort / "participants.tsv", sep="\t").query("split == 'val'")["participant_id"]
    )
    assert selection["threshold"] == pytest.approx(
        choose_threshold(val["label"], val["p_AD"]), rel=1e-4
    )  # from val only
    test = json.loads((out / "evaluation" / "test" / "metrics.json").read_text())
    assert test["threshold"] == selection["threshold"]
    for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "mcc", "roc_auc"):
        estimate, lower, upper = test[name]
        assert lower <= estimate <= upper or estimate != estimate  # NaN where undefined on a tiny test set
    assert (out / "evaluation" / "test" / "confusion.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test/roc_auc" in metrics and "val/loss" in metrics

    # the same model on another table: the external, MRI-only site
    assert (
        run(
            "evaluate",
            "--checkpoint",
            out,
            "--bids",
            cohort,
            "--split",
            "external",
            "--out",
            tmp_path / "ev",
            "n_bootstrap=50",
        )
        == 0
    )
    external = pd.read_csv(tmp_path / "ev" / "predictions.tsv", sep="\t")
    assert len(external) > 0 and set(external["diagnosis"]) <= {"CN", "AD"}


def test_brain_age_trains_on_cn_and_reports_the_corrected_gap(cohort, tmp_path):
    out = tmp_path / "age"
    assert (
        run(
            "train",
            "brain-age",
            "--bids",
            cohort,
            "--out",
            out,
            "model_options={channels: [4, 8, 8, 8, 8, 8]}",
            "train_diagnoses=[CN, MCI]",
            *FAST,
        )
        == 0
    )
    test = json.loads((out / "evaluation" / "test" / "metrics.json").read_text())
    assert test["mae"][0] > 0 and set(test["mean_gap"]) <= {"CN", "MCI", "AD"}
    assert json.loads((out / "selection.json").read_text())["bias_correction"] is not None
    assert (out / "evaluation" / "test" / "brain_age.png").exists()


def test_evaluate_refuses_a_folder_that_is_not_a_training_run(tmp_path, capsys):
    assert run("evaluate", "--checkpoint", tmp_path, "--table", tmp_path / "x.tsv", "--out", tmp_path / "ev") == 2
    assert "not a finished brainlearn training run" in capsys.readouterr().err


def test_volume_baseline_reports_next_to_the_deep_models(cohort, tmp_path):
    out = tmp_path / "baseline"
    assert run("baseline", "--bids", cohort, "--out", out, "--jobs", 1, "n_bootstrap=100") == 0
    volumes = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert len(volumes) == 30 and (volumes["hippocampus_ml"] > 0).all()
    test = json.loads((out / "evaluation" / "test" / "classify" / "metrics.json").read_text())
    assert 0 <= test["roc_auc"][0] <= 1 and test["n"] == {"CN": 2, "AD": 2}
    assert (out / "evaluation" / "test" / "brain-age" / "metrics.json").exists()


def test_a_tiny_model_learns_the_tiny_cohort(cohort, tmp_path):
    """Training loss falls on real-looking volumes: the data path, the transform and the module fit together."""
    from brainlearn.data.bids import read_bids
    from brainlearn.data.cache import Cache, build_cache
    from brainlearn.data.loaders import training_loaders
    from brainlearn.methods.supervised import ClassifierModule
    from brainlearn.models.networks import build_network
    from brainlearn.trainer import fit

    build_cache(read_bids(cohort), tmp_path / "cache", modalities=("t1",), progress=False)
    train, val = training_loaders(
        Cache(tmp_path / "cache"), modalities=["t1"], classes=["CN", "AD"], batch_size=4, augment=False
    )
    network = build_network("resnet3d", in_channels=1, outputs=2, options={"widen_factor": 0.125})
    module = ClassifierModule(network, ("CN", "AD"), lr=3e-3, betas=(0.9, 0.999), lr_decay=1.0)
    settings = {"max_epochs": 10, "progress_bar": False, "log_every_n_steps": 1}
    fit(module, tmp_path / "run", settings, train_dataloaders=train, val_dataloaders=val)
    losses = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")["train/loss_epoch"].dropna().tolist()
    assert min(losses[-3:]) < 0.6 * losses[0], losses


def test_label_efficiency_runs_both_arms_on_the_same_participants(cohort, tmp_path):
    import torch

    from brainlearn.models.backbones import create_backbone

    options = {"channels": [4, 8, 8, 8, 8, 8]}
    backbone = create_backbone("sfcn", 1, **options)  # stands in for a pretrained one
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, tmp_path / "p.ckpt")
    out = tmp_path / "le"
    args = [
        "--fractions",
        "50,100",
        "--seeds",
        1,
        "model_options={channels: [4, 8, 8, 8, 8, 8]}",
        "trainer.max_epochs=1",
        "n_bootstrap=20",
    ]
    assert (
        run(
            "experiment", "label-efficiency", "--bids", cohort, "--pretrained", tmp_path / "p.ckpt", "--out", out, *args
        )
        == 0
    )
    results = pd.read_csv(out / "results.tsv", sep="\t")
    assert len(results) == 4 and set(results["arm"]) == {"scratch", "pretrained"}
    for _, same in results.groupby("fraction"):
        assert same["participants"].nunique() == 1  # both arms saw the same labelled participants
    assert (
        results.loc[results["fraction"] == 50, "participants"].iloc[0]
        < results.loc[results["fraction"] == 100, "participants"].iloc[0]
    )
    assert (out / "figures" / "label_efficiency.png").exists() and "± " in (out / "summary.md").read_text()
    log = (out / "log.txt").read_text()
    assert log.count("backbone initialized from") == 2  # the two pretrained runs, not the two from scratch
    steps = {
        f: json.loads((out / f / "seed0" / "scratch" / "metrics.json").read_text())["global_step"]
        for f in ("f50", "f100")
    }
    assert steps["f50"] == steps["f100"] > 0  # equal_steps: half the participants, as many optimizer steps


def test_pretrain_simclr_then_fine_tune_from_its_backbone(cohort, tmp_path):
    options = "model_options={channels: [4, 8, 8, 8, 8, 8]}"
    assert (
        run(
            "pretrain",
            "simclr",
            "--bids",
            cohort,
            "--out",
            tmp_path / "simclr",
            options,
            "batch_size=4",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
        )
        == 0
    )
    checkpoint = tmp_path / "simclr" / "checkpoints" / "best.ckpt"
    assert (
        run(
            "train",
            "classify",
            "--bids",
            cohort,
            "--out",
            tmp_path / "cls",
            "--model",
            "sfcn",
            options,
            "--init-from",
            checkpoint,
            "--freeze-encoder",
            *FAST,
        )
        == 0
    )
    assert "backbone initialized from" in (tmp_path / "cls" / "log.txt").read_text()
