import gzip
import json
import logging
import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import brainlearn.data.cache_build as cache_build
from brainlearn.data.cache import Cache, build_cache
from brainlearn.data.cache_bench import benchmark_cache_read
from brainlearn.errors import BrainlearnError, CacheMismatchError
from brainlearn.io import read_image

SHAPE = (12, 14, 10)
RAS = np.array([[1.5, 0, 0, -9], [0, 1, 0, -7], [0, 0, 2, -10], [0, 0, 0, 1.0]])
LAS = np.array([[-1.5, 0, 0, 9], [0, 1, 0, -7], [0, 0, 2, -10], [0, 0, 0, 1.0]])
PERMUTED = np.array([[0, 0, 2, -10], [-1.5, 0, 0, 9], [0, 1, 0, -7], [0, 0, 0, 1.0]])  # axes stored as (A, S, L)


def _write(path, array, affine=RAS):
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


def _cohort(tmp_path, n=5, *, pet=False, mask=False, affines=None):
    """A table of ``n`` sessions with random non-cubic volumes; session k uses ``affines[k]`` if given."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        affine = (affines or {}).get(k, RAS)
        shape = (SHAPE[2], SHAPE[0], SHAPE[1]) if affine is PERMUTED else SHAPE
        row = {
            "participant_id": f"sub-{k:02d}",
            "session_id": "ses-01",
            "diagnosis": ["CN", "AD", "MCI"][k % 3],
        }
        row |= {"age": 60.0 + k, "sex": "F", "site": "A", "split": "train" if k < 3 else "test"}
        row["t1"] = _write(tmp_path / f"t1_{k}.nii.gz", rng.uniform(0, 1000, shape).astype(np.float32), affine)
        row["pet"] = _write(tmp_path / f"pet_{k}.nii", rng.uniform(0, 5, shape).astype(np.float32)) if pet else None
        labels = (rng.uniform(size=shape) > 0.7).astype(np.uint8)
        row["mask"] = _write(tmp_path / f"mask_{k}.nii.gz", labels, affine) if mask else None
        rows.append(row)
    return pd.DataFrame(rows).assign(t2=None, flair=None)


def test_float16_round_trip_keeps_values_and_affines(tmp_path):
    table = _cohort(tmp_path, affines={1: LAS, 2: PERMUTED})
    report = build_cache(table, tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    assert (report.n_volumes, report.n_skipped, len(cache)) == (5, 0, 5)
    assert report.bytes_written == 5 * np.prod(SHAPE) * 2
    for i, path in enumerate(table["t1"]):
        expected = read_image(path, canonical=True)
        volume = cache.read(i, "t1")
        assert volume.dtype == np.float32 and volume.shape == expected.shape
        np.testing.assert_allclose(volume, expected.array, rtol=1e-3)
        np.testing.assert_allclose(cache.affine(i, "t1"), expected.affine)
    assert cache.index["participant_id"].tolist() == table["participant_id"].tolist()
    assert cache.index["age"].tolist() == table["age"].tolist()


@pytest.mark.parametrize("affine", [LAS, PERMUTED], ids=["LAS", "permuted"])
def test_canonical_cache_keeps_world_coordinates(tmp_path, affine):
    table = _cohort(tmp_path, n=1, affines={0: affine})
    build_cache(table, tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    original = nib.load(table["t1"][0])
    data = original.get_fdata()
    for ijk in [(0, 0, 0), (3, 5, 7), tuple(n - 1 for n in data.shape)]:
        world = original.affine @ (*ijk, 1)
        cached_ijk = np.rint(np.linalg.inv(cache.affine(0, "t1")) @ world)[:3].astype(int)
        assert cache.read(0, "t1")[tuple(cached_ijk)] == pytest.approx(data[ijk], rel=1e-3)
    assert nib.aff2axcodes(cache.affine(0, "t1")) == ("R", "A", "S")


def test_uint8_round_trip_within_half_a_step_and_masks_exact(tmp_path):
    table = _cohort(tmp_path, pet=True, mask=True)
    build_cache(table, tmp_path / "cache", modalities=("mask", "t1", "pet"), dtype="uint8", progress=False)
    cache = Cache(tmp_path / "cache")
    for i in range(len(cache)):
        for m in ("t1", "pet"):
            expected = read_image(table[m][i], canonical=True).array
            step = cache.index[f"{m}_slope"].iat[i]
            assert np.abs(cache.read(i, m) - expected).max() <= step / 2 * (1 + 1e-4) + 1e-6 * np.abs(expected).max()
        mask = cache.read(i, "mask")
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, np.asarray(nib.load(table["mask"][i]).dataobj))


def test_bad_sessions_are_skipped_and_reported(tmp_path, caplog):
    table = _cohort(tmp_path, n=6)
    data = (tmp_path / "t1_1.nii.gz").read_bytes()
    (tmp_path / "t1_1.nii.gz").write_bytes(gzip.compress(gzip.decompress(data)[:2000]))  # header ok, voxels cut
    nan = np.ones(SHAPE, np.float32)
    nan[2, 3, 4] = np.nan
    table.loc[2, "t1"] = _write(tmp_path / "nan.nii.gz", nan)
    table.loc[3, "t1"] = None
    huge = np.full(SHAPE, 1e6, np.float32)
    huge[0, 0, 0] = 0
    table.loc[4, "t1"] = _write(tmp_path / "huge.nii.gz", huge)
    with caplog.at_level(logging.WARNING):
        report = build_cache(table, tmp_path / "cache", progress=False)
    reasons = {pid: reason for pid, _, reason in report.skipped}
    assert (report.n_volumes, report.n_skipped) == (2, 4)
    assert "truncated or corrupt" in reasons["sub-01"] and "t1_1.nii.gz" in reasons["sub-01"]
    assert "NaN" in reasons["sub-02"]
    assert reasons["sub-03"] == "no t1 image"
    assert "float16" in reasons["sub-04"]
    assert "sub-01" in caplog.text
    cache = Cache(tmp_path / "cache")
    assert cache.index["participant_id"].tolist() == ["sub-00", "sub-05"]
    assert [tuple(s) for s in cache.skipped] == report.skipped


def _counting_reads(monkeypatch, fail_after=None):
    calls = []

    def read(path, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise RuntimeError("simulated crash")
        calls.append(path)
        return read_image(path, **kwargs)

    monkeypatch.setattr(cache_build, "read_image", read)
    return calls


def test_interrupted_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    table = _cohort(tmp_path, n=5)
    _counting_reads(monkeypatch, fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(table, tmp_path / "cache", progress=False)
    with pytest.raises(CacheMismatchError, match="unfinished: rerun brainlearn cache to complete it"):
        Cache(tmp_path / "cache")
    calls = _counting_reads(monkeypatch)
    report = build_cache(table, tmp_path / "cache", progress=False)
    assert calls == table["t1"].tolist()[2:]
    assert report.n_volumes == 5
    cache = Cache(tmp_path / "cache")
    for i, path in enumerate(table["t1"]):
        np.testing.assert_allclose(cache.read(i, "t1"), read_image(path, canonical=True).array, rtol=1e-3)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["index.tsv", "manifest.json", "t1.bin"]


def test_unfinished_folder_of_another_plan_is_rebuilt(tmp_path, monkeypatch, caplog):
    table = _cohort(tmp_path, n=4)
    _counting_reads(monkeypatch, fail_after=1)
    with pytest.raises(RuntimeError):
        build_cache(table, tmp_path / "cache", progress=False)
    calls = _counting_reads(monkeypatch)
    with caplog.at_level(logging.WARNING):
        build_cache(table, tmp_path / "cache", dtype="uint8", progress=False)
    assert "rebuilding" in caplog.text
    assert len(calls) == 4


def test_finished_cache_is_reused_or_refused(tmp_path, monkeypatch):
    table = _cohort(tmp_path, n=3)
    build_cache(table, tmp_path / "cache", progress=False)
    calls = _counting_reads(monkeypatch)
    report = build_cache(table, tmp_path / "cache", progress=False)
    assert (calls, report.bytes_written, report.n_volumes) == ([], 0, 3)
    _write(tmp_path / "t1_1.nii.gz", np.ones(SHAPE, np.float32) * np.arange(SHAPE[2]))  # an image changed
    with pytest.raises(CacheMismatchError, match="Pass a new --out, delete the folder"):
        build_cache(table, tmp_path / "cache", progress=False)
    build_cache(table, tmp_path / "cache", progress=False, overwrite=True)
    assert len(calls) == 3
    np.testing.assert_array_equal(Cache(tmp_path / "cache").read(1, "t1")[0, 0], np.arange(SHAPE[2]))


def test_resplitting_updates_the_index_without_reading_images(tmp_path, monkeypatch):
    table = _cohort(tmp_path, n=3)
    build_cache(table, tmp_path / "cache", progress=False)
    calls = _counting_reads(monkeypatch)
    table.loc[0, "split"] = "val"
    table.loc[2, "diagnosis"] = "AD"
    table.loc[1, "age"] = float("nan")
    report = build_cache(table, tmp_path / "cache", progress=False)
    assert (calls, report.bytes_written) == ([], 0)
    index = Cache(tmp_path / "cache").index
    assert index["split"].tolist() == ["val", "train", "train"]
    assert index["diagnosis"].tolist() == ["CN", "AD", "AD"]
    assert np.isnan(index["age"][1]) and index["age"][2] == 62.0


def test_cache_errors_name_the_problem(tmp_path):
    table = _cohort(tmp_path, n=2)
    with pytest.raises(CacheMismatchError, match="no cache here"):
        Cache(tmp_path / "nowhere")
    with pytest.raises(BrainlearnError, match="dtype must be one of"):
        build_cache(table, tmp_path / "cache", dtype="int16")
    with pytest.raises(BrainlearnError, match="modalities must be distinct names"):
        build_cache(table, tmp_path / "cache", modalities=("T1w",))
    build_cache(table, tmp_path / "cache", progress=False)
    with pytest.raises(CacheMismatchError, match="has no pet; it holds t1"):
        Cache(tmp_path / "cache").read(0, "pet")
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest | {"format_version": 99}))
    with pytest.raises(CacheMismatchError, match="format version 99"):
        Cache(tmp_path / "cache")
    with pytest.raises(BrainlearnError, match="the table has no rows"):
        build_cache(table.iloc[:0], tmp_path / "empty")


def test_truncated_data_file_is_refused(tmp_path):
    build_cache(_cohort(tmp_path, n=2), tmp_path / "cache", progress=False)
    data = tmp_path / "cache" / "t1.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CacheMismatchError, match="the cache is incomplete"):
        Cache(tmp_path / "cache")


def test_mask_on_another_grid_is_skipped(tmp_path):
    table = _cohort(tmp_path, n=2, mask=True)
    shifted = RAS.copy()
    shifted[:3, 3] += 5
    table.loc[1, "mask"] = _write(tmp_path / "shifted.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    report = build_cache(table, tmp_path / "cache", modalities=("t1", "mask"), progress=False)
    assert report.n_volumes == 1
    assert "not on the grid" in report.skipped[0][2]


def test_cache_pickles_without_memory_maps(tmp_path):
    build_cache(_cohort(tmp_path, n=2), tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    before = cache.read(1, "t1")
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._maps == {}
    np.testing.assert_array_equal(copy.read(1, "t1"), before)
    np.testing.assert_array_equal(cache.read_slice(1, "t1", 2, 4), before[:, :, 4])


def test_benchmark_reports_positive_rates(tmp_path):
    table = _cohort(tmp_path, n=3)
    build_cache(table, tmp_path / "cache", progress=False)
    result = benchmark_cache_read(table, Cache(tmp_path / "cache"), repeats=2)
    assert result["n_volumes"] == 3
    assert result["direct_volumes_per_s"] > 0 and result["cache_volumes_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["cache_volumes_per_s"] / result["direct_volumes_per_s"])
