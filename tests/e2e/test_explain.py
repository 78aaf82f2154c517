"""``brainlearn explain gradcam | attention | occlusion | noise`` end to end on a tiny built-in cohort."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.cli import main


def run(*args) -> int:
    return main(["-q", *[str(a) for a in args]])


QUICK = ["trainer.max_epochs=1", "trainer.progress_bar=false", "evaluate.n_bootstrap=50", "batch_size=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny AD cohort, an AwareNet (AD vs CN) and an SFCN brain-age model trained one epoch on it."""
    root = tmp_path_factory.mktemp("explain")
    cohort = root / "cohort"
    assert run("cohort", "--out", cohort, "--subjects", 24, "--spacing", 4, "--preset", "ad", "--seed", 2) == 0
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    internal = table["split"] != "external"
    table.loc[internal, "split"] = "train"
    for split in ("val", "test"):  # two of each diagnosis in val and test
        for diagnosis in ("CN", "MCI", "AD"):
            chosen = table[internal & (table["split"] == "train") & (table["diagnosis"] == diagnosis)].index[:2]
            table.loc[chosen, "split"] = split
    table.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    classify, age = root / "classify", root / "age"
    model = ["--model", "awarenet", "model_options={width: 8}"]
    assert run("train", "classify", "--bids", cohort, "--out", classify, *model, *QUICK) == 0
    sfcn = ["--model", "sfcn", "model_options={channels: [4, 8, 8, 8]}"]
    assert run("train", "brain-age", "--cache", classify / "cache", "--out", age, *sfcn, *QUICK) == 0
    return {"cohort": cohort, "classify": classify, "age": age, "cache": classify / "cache"}


def explain(trained, method, out, *extra):
    flags = ["--checkpoint", trained["classify"], "--cache", trained["cache"], "--out", out]
    return run("explain", method, *flags, "n_bootstrap=50", "template_spacing=4", "figures=1", *extra)


def test_gradcam_writes_maps_on_the_input_grid_scored_against_the_truth(trained, tmp_path):
    out = tmp_path / "gradcam"
    assert explain(trained, "gradcam", out) == 0
    sessions = pd.read_csv(out / "sessions.tsv", sep="\t")
    assert len(sessions) == 6 and set(sessions["split"]) == {"test"}
    first = sessions.iloc[0]
    source = trained["cohort"] / first["participant_id"] / "anat" / f"{first['participant_id']}_T1w.nii.gz"
    image, saved = nib.load(source), nib.load(out / first["map_gradcam"])
    assert saved.shape == image.shape and np.allclose(saved.affine, image.affine)
    values = np.asarray(saved.dataobj)
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() == pytest.approx(1.0)
    assert values[np.asarray(image.dataobj) == 0].max() == 0  # nothing outside the head
    # AD and MCI sessions have atrophy to score against; CN sessions have none
    affected = sessions[sessions["diagnosis"].isin(["AD", "MCI"])]
    assert affected["auc_gradcam_atrophy"].between(0, 1).all()
    assert sessions.loc[sessions["diagnosis"] == "CN", "auc_gradcam_atrophy"].isna().all()
    assert affected["auc_gradcam_disease"].between(0, 1).all()  # atrophy and the enlarged ventricles
    metrics = json.loads((out / "metrics.json").read_text())
    estimate, lower, upper = metrics["explain/gradcam/auc/atrophy"]
    assert lower <= estimate <= upper and metrics["explain/gradcam/auc/atrophy/n"] == len(affected)
    regions = pd.read_csv(out / "regions.tsv", sep="\t")
    assert (
        metrics["explain/gradcam/hippocampus_rank/AD"]
        == regions.set_index("region").loc["Hippocampus", "rank_gradcam_AD"]
    )
    for group in ("all", "AD", "CN", "MCI"):
        assert (out / "population" / f"desc-gradcam_group-{group}_importance.nii.gz").exists()
        assert (out / "figures" / f"population_gradcam_{group}.png").exists()
    assert len(list((out / "figures").glob("sub-*_gradcam.png"))) == 1

    # an interrupted run resumes: maps already written are read back, not recomputed
    written = {path: path.stat().st_mtime_ns for path in (out / "maps").iterdir()}
    assert explain(trained, "gradcam", out) == 0
    assert {path: path.stat().st_mtime_ns for path in (out / "maps").iterdir()} == written
    assert json.loads((out / "metrics.json").read_text())["explain/gradcam/auc/atrophy"] == pytest.approx(
        [estimate, lower, upper]
    )


def test_attention_and_occlusion_of_awarenet(trained, tmp_path):
    assert explain(trained, "attention", tmp_path / "attention") == 0
    metrics = json.loads((tmp_path / "attention" / "metrics.json").read_text())
    assert {"explain/attention/auc/atrophy", "explain/sliceattention/auc/atrophy"} <= set(metrics)
    assert explain(trained, "occlusion", tmp_path / "occlusion", "--patch", 16, "--split", "val") == 0
    sessions = pd.read_csv(tmp_path / "occlusion" / "sessions.tsv", sep="\t")
    assert set(sessions["split"]) == {"val"} and "p_AD" in sessions


def test_noise_importance_of_the_brain_age_model(trained, tmp_path):
    out = tmp_path / "noise"
    flags = ["--checkpoint", trained["age"], "--cache", trained["cache"], "--out", out, "template_spacing=4"]
    assert run("explain", "noise", *flags, "epochs=1", "n_bootstrap=50", "figures=0") == 0
    assert (out / "noise_model.pt").exists()
    sessions = pd.read_csv(out / "sessions.tsv", sep="\t")
    assert "predicted_age" in sessions and sessions["auc_noise_ageing"].between(0, 1).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "explain/noise/auc/ageing" in metrics and "explain/noise/hippocampus_rank/all" in metrics
    subject = ["--mode", "subject", "steps=5", "n_bootstrap=50", "figures=0", "--split", "val"]
    assert run("explain", "noise", *flags[:4], "--out", tmp_path / "per-subject", *flags[6:], *subject) == 0


def test_explain_refuses_what_it_cannot_explain(trained, tmp_path, capsys):
    age = ["--checkpoint", trained["age"], "--cache", trained["cache"]]
    assert run("explain", "attention", *age, "--out", tmp_path / "a") == 2
    assert "attention maps are AwareNet's own; this run's network is a BackboneWithHead" in capsys.readouterr().err
    assert explain(trained, "gradcam", tmp_path / "b", "--target", "MCI") == 2
    assert "target 'MCI' is not a class of this model; its classes: CN, AD" in capsys.readouterr().err
    assert explain(trained, "gradcam", tmp_path / "c", "--layer", "stems") == 2
    assert "layer 'stems' is not a module of AwareNet; did you mean stem" in capsys.readouterr().err
    assert (
        run("explain", "gradcam", "--checkpoint", tmp_path, "--cache", trained["cache"], "--out", tmp_path / "d") == 2
    )
    assert "not a finished brainlearn training run" in capsys.readouterr().err
