"""The preprocessing pipeline end to end on small real-looking sessions: outputs, resume, a corrupt file."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.cohort.generate import generate_cohort
from brainlearn.data.bids import read_bids
from brainlearn.io import read_image, read_mask
from brainlearn.preprocess.pipeline import preprocess_table

SETTINGS = {
    "steps": ["n4", "register", "normalize"],
    "spacing": 4.0,
    "shape": None,
    "pad_to": None,
    "normalize": {"mr": "zscore", "pet": "suvr"},
    "suvr_reference": "pons",
}


def _native(path, shift_mm, flip_x):
    """Rewrite a cohort image as a 'raw' scan: moved in the world and stored in LAS order."""
    image = nib.load(path)
    data, affine = np.asarray(image.dataobj), image.affine.copy()
    affine[:3, 3] += shift_mm
    if flip_x:
        data = data[::-1]
        affine = affine @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate_cohort(root / "cohort", subjects=3, spacing=4.0, seed=3, preset="ms", external=0.0, progress=False)
    table = read_bids(root / "cohort")
    for i, row in enumerate(table.itertuples()):
        for column in ("t1", "flair", "pet", "mask"):
            _native(getattr(row, column), shift_mm=np.array([6.0, -4.0, 3.0]) * (i - 1), flip_x=i == 2)
    broken = table.copy().iloc[:1]
    broken["participant_id"] = "sub-broken"
    bad = root / "broken_T1w.nii.gz"
    bad.write_bytes(open(table["t1"][0], "rb").read()[:300])
    broken["t1"] = str(bad)
    return pd.concat([table, broken], ignore_index=True), root


def test_sessions_land_on_the_reference_grid_and_a_corrupt_one_is_reported(sessions, tmp_path):
    table, _ = sessions
    summary = preprocess_table(table, tmp_path, SETTINGS, jobs=2, progress=False)
    status = dict(zip(summary["participant_id"], summary["status"], strict=True))
    assert status.pop("sub-broken") == "failed"
    assert set(status.values()) == {"done"}
    reason = summary.loc[summary["participant_id"] == "sub-broken", "reason"].item()
    assert "broken_T1w.nii.gz" in reason and "truncated or corrupt" in reason
    out = pd.read_csv(tmp_path / "participants.tsv", sep="\t")
    assert len(out) == 3 and "sub-broken" not in set(out["participant_id"])
    first = out.iloc[0]
    t1 = read_image(tmp_path / first["t1"] if not str(first["t1"]).startswith("/") else first["t1"])
    for column in ("flair", "pet"):
        other = read_image(tmp_path / first[column] if not str(first[column]).startswith("/") else first[column])
        assert other.shape == t1.shape and np.allclose(other.affine, t1.affine)
    for row in out.itertuples():  # lesions still on the bright FLAIR spots, moved and flipped sessions too
        mask = read_mask(row.mask if str(row.mask).startswith("/") else tmp_path / row.mask)
        flair = read_image(row.flair if str(row.flair).startswith("/") else tmp_path / row.flair).array
        assert set(np.unique(mask.array)) <= {0, 1} and mask.array.sum() > 0
        assert flair[mask.array > 0].mean() > flair[flair != 0].mean() + 0.5
    assert (summary.loc[summary["status"] == "done", "qc_similarity"] > 0.6).all()
    assert (tmp_path / "figures" / "contact_sheet.png").exists()


def test_rerun_skips_finished_sessions(sessions, tmp_path):
    table, _ = sessions
    table = table[table["participant_id"] != "sub-broken"]
    preprocess_table(table.iloc[:1], tmp_path, SETTINGS, jobs=1, progress=False)
    done = tmp_path / table["participant_id"].iloc[0] / "ses-01" / "done.json"
    stamp = done.stat().st_mtime_ns
    summary = preprocess_table(table.iloc[:2], tmp_path, SETTINGS, jobs=1, progress=False)
    assert summary["status"].tolist() == ["done (earlier run)", "done"]
    assert done.stat().st_mtime_ns == stamp
    assert json.loads(done.read_text())["outputs"]["t1"].endswith("t1.nii.gz")


def test_an_unexpected_failure_in_one_session_does_not_end_the_run(sessions, tmp_path, monkeypatch):
    from brainlearn.preprocess import pipeline

    table, _ = sessions
    table = table[table["participant_id"] != "sub-broken"].iloc[:2]
    real = pipeline.preprocess_session

    def flaky(row, out, settings):
        if row["participant_id"] == table["participant_id"].iloc[0]:
            raise RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute: too many samples\nmore")
        return real(row, out, settings)

    monkeypatch.setattr(pipeline, "preprocess_session", flaky)
    summary = preprocess_table(table, tmp_path, SETTINGS, jobs=1, progress=False)
    assert summary["status"].tolist() == ["failed", "done"]
    assert (
        summary["reason"].iloc[0]
        == "unexpected RuntimeError: Exception thrown in SimpleITK ImageRegistrationMethod_Execute: too many samples"
    )
    assert not (tmp_path / table["participant_id"].iloc[0] / "ses-01" / "done.json").exists()
