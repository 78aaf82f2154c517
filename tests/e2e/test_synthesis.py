"""Document 000's three stages end to end on a tiny built-in cohort: ShareGAN stage 1 and 2, AwareNet on MRI in
[-1, 1], joint training, then ``brainlearn synthesize`` with the joint run."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.cli import main
from brainlearn.data.bids import read_bids
from brainlearn.data.tables import write_table


def run(*args) -> int:
    return main(["-q", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "cohort"
    assert run("cohort", "--out", root, "--subjects", 24, "--spacing", 4, "--preset", "ad", "--seed", 2) == 0
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    internal = table["split"] != "external"
    table.loc[internal, "split"] = "train"
    for split in ("val", "test"):  # two CN and two AD in each, so that every AUC is defined
        for diagnosis in ("CN", "AD"):
            chosen = table[internal & (table["split"] == "train") & (table["diagnosis"] == diagnosis)].index[:2]
            table.loc[chosen, "split"] = split
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    assert run("cache", "--bids", root, "--out", root.parent / "cache", "modalities=[t1,pet]") == 0
    return root


GAN = ["model_options={width: 2, heads: 8, downsamples: 3}", "batch_size=2", "evaluate.n_bootstrap=50"]
FAST = ["trainer.max_epochs=1", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def stages(cohort, tmp_path_factory):
    """ShareGAN stage 1 (32³ crops) and stage 2 (whole volumes, from stage 1), one epoch each."""
    cache, root = cohort.parent / "cache", tmp_path_factory.mktemp("stages")
    stage1, stage2 = root / "stage1", root / "stage2"
    assert (
        run("train", "sharegan", "--cache", cache, "--out", stage1, "--stage", 1, "crop=[32,32,32]", *GAN, *FAST) == 0
    )
    assert (
        run("train", "sharegan", "--cache", cache, "--out", stage2, "--stage", 2, "--init-from", stage1, *GAN, *FAST)
        == 0
    )
    return stage1, stage2


def test_sharegan_stages_record_the_generator_and_score_the_test_split(stages):
    stage1, stage2 = stages
    generator = json.loads((stage2 / "inference.json").read_text())
    assert generator["model_options"]["width"] == 2 and generator["downsample"] == 1
    synthesis = json.loads((stage2 / "evaluation" / "test" / "synthesis.json").read_text())
    assert synthesis["n"] == 4 and -1 <= synthesis["ssim"][0] <= 1 and synthesis["mae"][0] > 0
    assert 0 < synthesis["reference/ssim"][0] <= 1  # the mean training PET, the score to beat
    assert (stage2 / "evaluation" / "test" / "synthesis.png").exists()
    assert "random (32, 32, 32) crops" in (stage1 / "log.txt").read_text()
    assert "initialized from" in (stage2 / "log.txt").read_text()


def test_joint_training_reports_three_diagnoses_then_synthesizes(cohort, stages, tmp_path):
    cache, classifier, joint = cohort.parent / "cache", tmp_path / "classify", tmp_path / "joint"
    classify = ["--model", "awarenet", "model_options={width: 8}", "intensity=range", "evaluate.n_bootstrap=50"]
    assert run("train", "classify", "--cache", cache, "--out", classifier, *classify, *FAST) == 0
    args = ["--cache", cache, "--synthesis", stages[1], "--classifier", classifier, "--out", joint]
    assert run("train", "joint", *args, "evaluate.n_bootstrap=50", *FAST) == 0
    selection = json.loads((joint / "selection.json").read_text())
    assert set(selection["thresholds"]) == {"mri", "synthesized", "both"}
    metrics = json.loads((joint / "metrics.json").read_text())
    for name in ("mri", "synthesized", "both"):
        assert 0 <= metrics[f"test/{name}/roc_auc"][0] <= 1
        assert (joint / "evaluation" / "test" / name / "roc.png").exists()
    assert "test/ssim" in metrics and "external/mri/roc_auc" in metrics

    table = read_bids(cohort)  # an external site without PET
    write_table(table[table["split"] == "external"].drop(columns="pet"), tmp_path / "mri-only.tsv")
    args = ["--checkpoint", joint, "--table", tmp_path / "mri-only.tsv", "--split", "all", "n_bootstrap=50"]
    assert run("evaluate", *args, "--out", tmp_path / "external") == 0
    external = json.loads((tmp_path / "external" / "metrics.json").read_text())
    assert external["both/threshold"] == selection["thresholds"]["both"]
    assert (tmp_path / "external" / "synthesized" / "predictions.tsv").exists()

    source = sorted(cohort.rglob("*_T1w.nii.gz"))[0]
    assert run("synthesize", "--checkpoint", joint, "--in", source, "--out", tmp_path / "pet.nii.gz") == 0
    written, original = nib.load(tmp_path / "pet.nii.gz"), nib.load(source)
    assert written.shape == original.shape and np.allclose(written.affine, original.affine)
    assert 0 <= written.get_fdata().min() and written.get_fdata().max() <= 1


def test_joint_refuses_a_classifier_trained_on_z_scores(cohort, stages, tmp_path, capsys):
    cache, classifier = cohort.parent / "cache", tmp_path / "classify"
    classify = ["--model", "awarenet", "model_options={width: 8}", "evaluate.n_bootstrap=20", *FAST]
    assert run("train", "classify", "--cache", cache, "--out", classifier, *classify) == 0
    args = ["--cache", cache, "--synthesis", stages[1], "--classifier", classifier, "--out", tmp_path / "joint"]
    assert run("train", "joint", *args) == 2
    expected = "trained with intensity=zscore; the generator works in [-1, 1]: retrain with intensity=range"
    assert expected in capsys.readouterr().err
