"""Document 003 end to end on a tiny built-in cohort: ``pretrain vqgan`` → ``pretrain diffusion`` (conditioned on
diagnosis and age, scored in a brain-age network's feature space) → ``sample`` → ``pretrain inpaint`` on the
samples."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.cli import main
from brainlearn.data.tables import read_table


def run(*args) -> int:
    return main(["-q", *[str(a) for a in args]])


FAST = ["trainer.max_epochs=1", "trainer.progress_bar=false"]
VQGAN = [
    "model_options={channels: 4, downsample: 4, embedding_dim: 4, n_codes: 32}",
    "discriminator={channels: 4, layers: 2}",
    "gan_start=2",  # the discriminators join within the one epoch
    "evaluate.n_bootstrap=20",
]
DIFFUSION = [
    "model_options={channels: 8, multipliers: [1, 2, 4], heads: 2, head_channels: 4}",
    "timesteps=20",
    "latent_scale=standardize",  # unclipped sampling (the demo test runs the default, codebook scaling)
    "batch_size=4",
    "evaluate.samples=4",
    "evaluate.steps=3",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "cohort"
    assert run("cohort", "--out", root, "--subjects", 24, "--spacing", 4, "--preset", "ad", "--seed", 3) == 0
    assert run("cache", "--bids", root, "--out", root.parent / "cache", "modalities=[t1]") == 0
    return root.parent / "cache"


@pytest.fixture(scope="module")
def runs(cohort, tmp_path_factory):
    """A VQ-GAN, a small brain-age SFCN (the feature network) and a conditional latent diffusion model."""
    root = tmp_path_factory.mktemp("generation")
    vqgan, age, diffusion = root / "vqgan", root / "age", root / "diffusion"
    assert run("pretrain", "vqgan", "--cache", cohort, "--out", vqgan, *VQGAN, *FAST) == 0
    sfcn = ["model_options={channels: [4, 8, 8, 8, 8, 8]}", "train_diagnoses=[CN, MCI, AD]", "evaluate.n_bootstrap=20"]
    assert run("train", "brain-age", "--cache", cohort, "--out", age, *sfcn, *FAST) == 0
    features = f"evaluate.features={age}"
    assert (
        run(
            "pretrain",
            "diffusion",
            "--cache",
            cohort,
            "--vqgan",
            vqgan,
            "--out",
            diffusion,
            *DIFFUSION,
            features,
            *FAST,
        )
        == 0
    )
    return vqgan, diffusion


def test_vqgan_scores_its_reconstructions_and_records_the_grid(runs, cohort):
    vqgan, _ = runs
    settings = json.loads((vqgan / "inference.json").read_text())
    assert settings["compression"] == 4 and settings["multiple"] == 16 and len(settings["shape"]) == 3
    scores = json.loads((vqgan / "evaluation" / "test" / "reconstruction.json").read_text())
    assert 0 < scores["t1"]["mae"][0] < 2 and -1 <= scores["t1"]["ssim"][0] <= 1
    assert (vqgan / "evaluation" / "test" / "reconstruction.png").exists()
    metrics = json.loads((vqgan / "metrics.json").read_text())
    assert "test/t1/psnr" in metrics


def test_diffusion_scores_diversity_and_features_against_real_scans(runs):
    _, diffusion = runs
    scores = json.loads((diffusion / "evaluation" / "test" / "samples.json").read_text())
    assert scores["samples"] == 4
    assert -1 <= scores["diversity_ms_ssim"] <= 1 and -1 <= scores["real_diversity_ms_ssim"] <= 1
    assert scores["features_frechet_distance"] >= 0 and 0 <= scores["features_recall"] <= 1
    assert scores["real_train_frechet_distance"] >= 0  # the reference a perfect generator reaches
    assert (diffusion / "evaluation" / "test" / "samples.png").exists()


def test_sample_writes_a_cohort_on_the_training_grid_and_resumes(runs, cohort, tmp_path):
    _, diffusion = runs
    out = tmp_path / "samples"
    args = ["sample", "--checkpoint", diffusion, "--n", 3, "--steps", 3, "--diagnosis", "AD", "--age", 72, "--out", out]
    assert run(*args, "val_fraction=0.34") == 0
    table = read_table(out / "participants.tsv")
    assert len(table) == 3 and set(table["split"]) == {"train", "val"} and set(table["diagnosis"]) == {"AD"}
    grid = json.loads((runs[0] / "inference.json").read_text())
    image = nib.load(table["t1"].iloc[0])
    assert image.shape == tuple(grid["shape"]) and np.allclose(image.affine, grid["affine"])
    data = np.asarray(image.dataobj)
    assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1
    assert (out / "figures" / "samples.png").exists()
    first = table["t1"].iloc[0]
    before = nib.load(first).get_fdata()
    assert run(*args, "val_fraction=0.34") == 0  # a rerun keeps the written volumes
    assert np.array_equal(nib.load(first).get_fdata(), before)


def test_sampling_is_reproducible_for_a_seed(runs, tmp_path):
    _, diffusion = runs
    volumes = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert (
            run("sample", "--checkpoint", diffusion, "--n", 1, "--steps", 2, "--seed", seed, "--out", tmp_path / name)
            == 0
        )
        volumes.append(nib.load(next((tmp_path / name).glob("*_t1.nii.gz"))).get_fdata())
    assert np.array_equal(volumes[0], volumes[1]) and not np.array_equal(volumes[0], volumes[2])


def test_bf16_sampling_gives_the_float32_volumes_within_bf16_tolerance(runs, tmp_path, capsys):
    _, diffusion = runs
    volumes = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ("--n", 1, "--steps", 2, "--seed", 5, "--out", out, f"precision={precision}")
        assert run("sample", "--checkpoint", diffusion, *args) == 0
        volumes[precision] = nib.load(next(out.glob("*_t1.nii.gz"))).get_fdata()
    assert volumes["bf16"].dtype == volumes["fp32"].dtype
    error = np.linalg.norm(volumes["bf16"] - volumes["fp32"]) / np.linalg.norm(volumes["fp32"])
    # bf16 keeps 8 bits of mantissa (0.4 % per rounding); two DDIM steps through a barely trained denoiser compound
    # it to about 3 % (3.1 % for the seeded run of 2026-12-03)
    assert 0 < error < 5e-2
    assert run("sample", "--checkpoint", diffusion, "--out", tmp_path / "x", "precision=fp16") == 2
    assert "precision: expected auto, fp32 or bf16, not 'fp16'" in capsys.readouterr().err


def test_inpainting_pretrains_on_the_samples(runs, tmp_path):
    _, diffusion = runs
    samples, inpaint = tmp_path / "samples", tmp_path / "inpaint"
    assert run("sample", "--checkpoint", diffusion, "--n", 4, "--steps", 2, "--out", samples, "val_fraction=0.25") == 0
    settings = ["patch=64", "samples_per_epoch=2", "val_samples=1", "model_options={feature_size: 12}"]
    assert run("pretrain", "inpaint", "--table", samples / "participants.tsv", "--out", inpaint, *settings, *FAST) == 0
    assert (inpaint / "checkpoints" / "best.ckpt").exists()


def test_sample_refuses_a_diagnosis_the_model_does_not_know(runs, tmp_path, capsys):
    _, diffusion = runs
    assert run("sample", "--checkpoint", diffusion, "--diagnosis", "PD", "--out", tmp_path / "s") == 2
    assert "--diagnosis 'PD': the model knows ['CN', 'MCI', 'AD']" in capsys.readouterr().err


def test_diffusion_refuses_a_folder_that_is_not_a_vqgan_run(cohort, tmp_path, capsys):
    assert run("pretrain", "diffusion", "--cache", cohort, "--vqgan", tmp_path, "--out", tmp_path / "d", *FAST) == 2
    assert "not a finished brainlearn training run" in capsys.readouterr().err


def test_vqgan_refuses_an_unknown_model_option(cohort, tmp_path, capsys):
    assert run("pretrain", "vqgan", "--cache", cohort, "--out", tmp_path / "v", "model_options={width: 4}", *FAST) == 2
    assert "unknown key 'model_options.width'. Did you mean" in capsys.readouterr().err


def test_samples_table_lists_every_modality_column(runs, tmp_path):
    _, diffusion = runs
    out = tmp_path / "s"
    assert run("sample", "--checkpoint", diffusion, "--n", 1, "--steps", 2, "--out", out) == 0
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert {"participant_id", "session_id", "t1", "split"} <= set(table.columns)


def test_diffusion_refuses_an_unknown_condition(runs, cohort, tmp_path, capsys):
    args = ["pretrain", "diffusion", "--cache", cohort, "--vqgan", runs[0], "--out", tmp_path / "d", *FAST]
    assert run(*args, "conditions=[diagnosis, sex]") == 2
    assert "conditions must be a list of 'diagnosis' and/or 'age' (or [])" in capsys.readouterr().err


def test_vqgan_refuses_a_padding_its_compression_does_not_divide(cohort, tmp_path, capsys):
    assert run("pretrain", "vqgan", "--cache", cohort, "--out", tmp_path / "v", *VQGAN, "multiple=6", *FAST) == 2
    assert "multiple must be a positive multiple of the VQ-GAN's compression (4), not 6" in capsys.readouterr().err
