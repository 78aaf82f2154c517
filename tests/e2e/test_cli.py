"""End-to-end runs of the ``brainlearn`` command on tiny real-looking cohorts."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.cli import main

SHAPE = (12, 14, 10)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _t1(path, seed):
    rng = np.random.default_rng(seed)
    volume = rng.normal(100, 10, SHAPE).astype(np.float32)
    volume[3:9, 4:10, 2:8] += 80  # a bright "brain"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.2, 2.0, 1.0])), path)
    return path


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "bids"
    rows = []
    for i in range(10):
        pid = f"sub-{i:02d}"
        _t1(root / pid / "anat" / f"{pid}_T1w.nii.gz", seed=i)
        rows.append({"participant_id": pid, "diagnosis": "AD" if i % 2 else "CN", "age": 60 + i, "sex": "MF"[i % 2]})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def run(*args):
    return main([str(a) for a in args])


def test_help_of_every_command(capsys):
    result = subprocess.run([sys.executable, "-m", "brainlearn", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "cache" in result.stdout
    for command in ("table", "split", "cache", "cohort", "bench", "demo", "check"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: brainlearn " + command in capsys.readouterr().out


def test_table_split_cache_round_trip(bids, tmp_path, capsys):
    assert run("table", "--bids", bids, "--out", tmp_path / "table") == 0
    table_path = tmp_path / "table" / "participants.tsv"
    assert len(pd.read_csv(table_path, sep="\t")) == 10

    assert run("split", "--table", table_path, "--out", tmp_path / "split", "--val", 0.2, "--test", 0.2) == 0
    split = pd.read_csv(tmp_path / "split" / "participants.tsv", sep="\t")
    assert split.groupby("participant_id")["split"].nunique().max() == 1
    assert set(split["split"]) == {"train", "val", "test"}
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["split/train"] + metrics["split/val"] + metrics["split/test"] == 10

    assert run("cache", "--table", tmp_path / "split" / "participants.tsv", "--out", tmp_path / "cache") == 0
    for name in ("config.yaml", "log.txt", "metrics.json", "manifest.json", "index.tsv"):
        assert (tmp_path / "cache" / name).exists(), name
    from brainlearn.data.cache import Cache

    cache = Cache(tmp_path / "cache")
    assert len(cache) == 10
    original = nib.load(bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz").get_fdata()
    row = int(np.flatnonzero(cache.index["participant_id"] == "sub-03")[0])
    np.testing.assert_allclose(cache.read(row, "t1"), original, rtol=2e-3)


def test_one_bad_subject_is_reported_and_skipped(bids, tmp_path, caplog):
    broken = bids / "sub-04" / "anat" / "sub-04_T1w.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])
    assert run("cache", "--bids", bids, "--out", tmp_path / "cache") == 0
    metrics = json.loads((tmp_path / "cache" / "metrics.json").read_text())
    assert metrics["cache/volumes"] == 9 and metrics["cache/skipped"] == 1
    assert "sub-04" in json.dumps(metrics["cache/skipped_subjects"])
    assert "sub-04" in (tmp_path / "cache" / "log.txt").read_text()


def test_errors_are_one_readable_line_and_exit_2(tmp_path, capsys):
    assert run("cache", "--table", tmp_path / "missing.tsv", "--out", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "missing.tsv" in err and "Traceback" not in err
    assert run("cache", "--table", tmp_path / "t.tsv", "modalitis=[t1]", "--out", tmp_path / "c") == 2
    assert "Did you mean 'modalities'?" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "brainlearn",
            "--debug",
            "cache",
            "--table",
            str(tmp_path / "none.tsv"),
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "none.tsv" in result.stderr


def test_config_file_and_print_config(tmp_path, capsys):
    config = tmp_path / "cache.yaml"
    config.write_text("table: data/participants.tsv\ndtype: uint8\nmodalities: [t1, pet]\n")
    assert run("cache", "--config", config, "dtype=float16", "--print-config") == 0
    out = capsys.readouterr().out
    assert "dtype: float16" in out and str(tmp_path / "data" / "participants.tsv") in out and "- pet" in out


def test_check_command(tmp_path, capsys):
    good = _t1(tmp_path / "good.nii.gz", 0)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[:100])
    assert run("check", good) == 0
    assert run("check", good, bad) == 2
    assert "1 of 2 images failed" in capsys.readouterr().err


def test_bench_cache_read(tmp_path):
    assert run("bench", "--method", "cache-read", "--size", 16, "--n", 3, "--out", tmp_path / "bench") == 0
    results = json.loads((tmp_path / "bench" / "bench.json").read_text())["results"]
    assert results["bench/cache-read/ratio"] > 0
    assert "volumes/s" in (tmp_path / "bench" / "bench.md").read_text()


def test_bench_sharegan_times_its_ladder_of_arms(tmp_path, capsys):
    args = ["--size", 32, "--batch", 1, "--precision", "fp32", "width=2", "repeats=1", "--out", tmp_path / "bench"]
    assert run("bench", "--method", "sharegan", *args) == 0
    results = json.loads((tmp_path / "bench" / "bench.json").read_text())["results"]
    assert results["bench/sharegan/ms"] > 0 and results["bench/sharegan/ratio"] > 0
    assert "| + fused norm chain, 2 batched G calls |" in (tmp_path / "bench" / "bench.md").read_text()
    assert run("bench", "--method", "sharegan", "--size", 40, "--out", tmp_path / "bad") == 2
    assert "--size must be a multiple of 16 and at least 32 (the generator halves" in capsys.readouterr().err


def test_cohort_command_writes_a_cohort_that_caches(tmp_path):
    out = tmp_path / "cohort"
    assert run("cohort", "--out", out, "--subjects", 4, "--spacing", 4, "--preset", "ms", "external=0") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cohort/subjects"] == 4 and metrics["cohort/jacobian_min"] > 0
    assert (out / "figures" / "montage.png").exists()
    assert run("cache", "--bids", out, "--modalities", "t1", "flair", "mask", "--out", tmp_path / "cache") == 0
    assert json.loads((tmp_path / "cache" / "metrics.json").read_text())["cache/volumes"] == 4


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(config, capsys):
    from brainlearn.commands import COMMANDS

    # a config is named after its command ("pretrain-inpaint-cpu": brainlearn pretrain inpaint); the longest wins
    names = sorted((c.full_name for c in COMMANDS), key=len, reverse=True)
    name = next(n for n in names if f"{config.stem}-".startswith(f"{n.replace(' ', '-')}-"))
    assert main([*name.split(), "--config", str(config), "--print-config"]) == 0
    assert "out:" in capsys.readouterr().out


def test_preprocess_then_take_a_map_back_to_native_space(tmp_path):
    cohort = tmp_path / "cohort"
    assert run("cohort", "--out", cohort, "--subjects", 1, "--spacing", 4, "--preset", "ad", "external=0") == 0
    prep = tmp_path / "prep"
    assert (
        run(
            "preprocess",
            "--bids",
            cohort,
            "--out",
            prep,
            "--steps",
            "n4",
            "register",
            "normalize",
            "--spacing",
            4,
            "--jobs",
            1,
        )
        == 0
    )
    summary = pd.read_csv(prep / "summary.tsv", sep="\t")
    assert summary["status"].tolist() == ["done"]
    assert (prep / "figures" / "contact_sheet.png").exists()
    t1_grid = prep / "sub-001" / "ses-01" / "t1.nii.gz"
    assert (
        run(
            "to-native",
            "--preprocessed",
            prep,
            "--participant",
            "sub-001",
            "--map",
            t1_grid,
            "--out",
            tmp_path / "native",
        )
        == 0
    )
    native = nib.load(tmp_path / "native" / "t1.nii.gz")
    original = nib.load(cohort / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    assert native.shape == original.shape and np.allclose(native.affine, original.affine)
    inside = np.asarray(native.dataobj) != 0
    r = np.corrcoef(np.asarray(native.dataobj)[inside], np.asarray(original.dataobj)[inside])[0, 1]
    assert r > 0.8  # the normalized T1 taken back lines up with the raw one


def test_preprocess_converts_scanner_formats_first(tmp_path):
    cohort = tmp_path / "cohort"
    assert run("cohort", "--out", cohort, "--subjects", 1, "--spacing", 4, "--preset", "ad", "external=0") == 0
    t1 = nib.load(cohort / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    mgz = tmp_path / "raw" / "sub-001_T1w.mgz"  # a FreeSurfer user's file
    mgz.parent.mkdir()
    nib.save(nib.MGHImage(np.asarray(t1.dataobj, dtype=np.float32), t1.affine), mgz)
    table = tmp_path / "table.tsv"
    broken = tmp_path / "raw" / "sub-002_T1w.mgz"  # cut off in transfer: one bad session must not stop the run
    broken.write_bytes(mgz.read_bytes()[:200])
    pd.DataFrame(
        {"participant_id": ["sub-001", "sub-002"], "t1": [str(mgz), str(broken)], "diagnosis": ["AD", "CN"]}
    ).to_csv(table, sep="\t", index=False)
    prep = tmp_path / "prep"
    assert run("preprocess", "--table", table, "--out", prep, "--steps", "register", "--spacing", 4, "--jobs", 1) == 0
    summary = pd.read_csv(prep / "summary.tsv", sep="\t")
    assert summary["status"].tolist() == ["done", "failed"]
    assert (
        summary.loc[1, "reason"].startswith("conversion failed: t1: ") and "sub-002_T1w.mgz" in summary.loc[1, "reason"]
    )
    assert pd.read_csv(prep / "participants.tsv", sep="\t")["participant_id"].tolist() == ["sub-001"]
    converted = list((prep / "converted").rglob("*.nii.gz"))
    assert len(converted) == 1 and np.allclose(nib.load(converted[0]).affine, t1.affine, atol=1e-4)
