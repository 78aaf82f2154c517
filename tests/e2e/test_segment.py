"""``brainlearn train segment``, ``segment`` and their pretraining end to end on a tiny built-in MS cohort."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.cli import main


def run(*args) -> int:
    return main(["-q", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("ms") / "cohort"
    assert run("cohort", "--out", root, "--subjects", 10, "--spacing", 4, "--preset", "ms", "--seed", 2) == 0
    return root


SMALL_UNET = "model_options={decoder_channels: [32, 16, 16, 8, 8]}"
FAST = [
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "evaluate.n_bootstrap=50",
    "samples_per_epoch=16",
    "val_samples=16",
    "batch_size=8",
    "augment=false",
]


def test_train_segment_then_segment_new_images(cohort, tmp_path):
    out = tmp_path / "seg"
    assert run("train", "segment", "--bids", cohort, "--out", out, SMALL_UNET, *FAST) == 0
    selection = json.loads((out / "selection.json").read_text())
    assert 0 < selection["threshold"] < 1
    table = pd.read_csv(out / "evaluation" / "test" / "subjects.tsv", sep="\t")
    assert {"dice", "hd95", "lesion_tpr", "lesion_fp", "lesion_f1", "avd"} <= set(table.columns)
    summary = json.loads((out / "evaluation" / "test" / "metrics.json").read_text())
    assert summary["n"] == len(table) and "dice" in summary
    assert len(list((out / "evaluation" / "test" / "masks").glob("*_lesions.nii.gz"))) == len(table)

    anat = cohort / "sub-001" / "anat"
    images = [anat / f"sub-001_{m}.nii.gz" for m in ("T1w", "T2w", "FLAIR")]
    assert run("segment", "--checkpoint", out, "--in", *images, "--out", tmp_path / "new") == 0
    mask, t1 = nib.load(tmp_path / "new" / "sub-001_T1w_lesions.nii.gz"), nib.load(images[0])
    assert mask.shape == t1.shape and np.allclose(mask.affine, t1.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}

    arrays = []  # document 000's .npy format: no header, a 1 mm identity affine
    for image in images:
        arrays.append(tmp_path / image.name.replace(".nii.gz", ".npy"))
        np.save(arrays[-1], np.asarray(nib.load(image).dataobj, dtype=np.float32))
    assert run("segment", "--checkpoint", out, "--in", *arrays, "--out", tmp_path / "npy") == 0
    assert nib.load(tmp_path / "npy" / "sub-001_T1w_lesions.nii.gz").shape == t1.shape


def test_segment_refuses_the_wrong_number_of_images(cohort, tmp_path, capsys):
    out = tmp_path / "seg"
    assert run("train", "segment", "--bids", cohort, "--out", out, SMALL_UNET, *FAST) == 0
    t1 = cohort / "sub-001" / "anat" / "sub-001_T1w.nii.gz"
    assert run("segment", "--checkpoint", out, "--in", t1, "--out", tmp_path / "new") == 2
    assert "the model takes 3 images (t1, t2, flair)" in capsys.readouterr().err
    args = ("--in", t1, t1, t1)
    assert run("segment", "--checkpoint", tmp_path, *args, "--out", tmp_path / "a") == 2  # not a run folder
    assert f"{tmp_path}: not a finished brainlearn training run" in capsys.readouterr().err
    (out / "selection.json").write_text("{not json", encoding="utf-8")  # a damaged run folder
    assert run("segment", "--checkpoint", out, *args, "--out", tmp_path / "b") == 2
    assert "its config.yaml or selection.json cannot be read" in capsys.readouterr().err


def test_context_encoder_pretraining_initializes_the_segmenter(cohort, tmp_path):
    pre = tmp_path / "ce"
    assert (
        run(
            "pretrain",
            "context-encoder",
            "--bids",
            cohort,
            "--out",
            pre,
            SMALL_UNET,
            "samples_per_epoch=8",
            "val_samples=8",
            "batch_size=4",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
        )
        == 0
    )
    checkpoint = pre / "checkpoints" / "best.ckpt"
    out = tmp_path / "seg"
    assert (
        run(
            "train",
            "segment",
            "--bids",
            cohort,
            "--out",
            out,
            SMALL_UNET,
            "--init-from",
            checkpoint,
            "--freeze-encoder",
            *FAST,
        )
        == 0
    )
    log = (out / "log.txt").read_text()
    assert "encoder initialized from" in log and "tensors" in log


def test_swin_unetr_trains_on_patches_and_infers_by_sliding_window(cohort, tmp_path):
    out = tmp_path / "swin"
    assert (
        run(
            "train",
            "segment",
            "--bids",
            cohort,
            "--out",
            out,
            "--model",
            "swin_unetr",
            "model_options={feature_size: 12}",
            "patch=64",
            "samples_per_epoch=4",
            "batch_size=2",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            "evaluate.n_bootstrap=20",
            "evaluate.splits=[test]",
            "val_samples=2",
        )
        == 0
    )
    table = pd.read_csv(out / "evaluation" / "test" / "subjects.tsv", sep="\t")
    assert len(table) > 0 and table["dice"].between(0, 1).all()


def test_inpainting_pretraining_gives_an_encoder_the_swin_unetr_takes_whole(cohort, tmp_path):
    from brainlearn.commands_segment import load_encoder
    from brainlearn.data.cache import Cache
    from brainlearn.models.segmenters import build_segmenter

    pre = tmp_path / "inpaint"
    swin = "model_options={feature_size: 12}"
    tiny = [
        "samples_per_epoch=1",
        "val_samples=1",
        "batch_size=1",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
    ]
    assert run("pretrain", "inpaint", "--bids", cohort, "--out", pre, swin, *tiny) == 0
    assert Cache(pre / "cache").modalities == ("t1",)  # no lesion mask needed
    metrics = pd.read_csv(pre / "logs" / "metrics.csv")
    assert metrics[["train/loss_epoch", "val/l1", "val/ms_ssim"]].notna().any().all()
    checkpoint = Path(json.loads((pre / "metrics.json").read_text())["pretrain/checkpoint"])
    assert checkpoint.name == "best.ckpt" and "pass it to train segment --init-from" in (pre / "log.txt").read_text()
    load_encoder(build_segmenter("swin_unetr", in_channels=1, options={"feature_size": 12}), checkpoint)  # or raises
