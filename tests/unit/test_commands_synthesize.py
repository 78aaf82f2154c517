"""``brainlearn synthesize`` on tiny volumes with a fabricated ShareGAN run folder (ShareSynNet of width 2)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from brainlearn.cli import main
from brainlearn.commands_synthesize import load_generator, synthesize_file, synthesize_volume
from brainlearn.io import from_canonical, read_image
from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI, ShareSynNet

SHAPE = (32, 40, 24)
ZOOMS = (1.5, 1.2, 2.0)


def _volume(shape=SHAPE, seed=0) -> np.ndarray:
    """A bright ellipsoid with texture on a zero background: a brain for scale_to_range."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.6
    return (inside * (800 + 200 * grid[0] + rng.normal(0, 30, shape))).astype(np.float32)


def _save(path, array, axcodes="RAS", zooms=ZOOMS):
    """Save ``array`` (given in RAS order) in the orientation ``axcodes``, with qform code 1 and sform code 4."""
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-20.0, -30.0, 10.0]
    image = nib.Nifti1Image(array, affine)
    image = image.as_reoriented(
        nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(axcodes))
    )
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def _fake_run(folder, *, command="train sharegan", downsample=1, width=2, saved_width=None):
    """A finished training run: config.yaml, selection.json, inference.json and a checkpoint of ShareSynNet."""
    torch.manual_seed(0)
    state = {f"generator.{k}": v for k, v in ShareSynNet(width=width).state_dict().items()}
    state["discriminator_pet.layers.0.weight"] = torch.zeros(2, 1, 4, 4, 4)  # other modules of the method
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": state, "global_step": 3}, folder / "checkpoints" / "best.ckpt")
    generator = {
        "mri": "t1",
        "pet": "pet",
        "downsample": downsample,
        "model_options": {"width": saved_width or width, "heads": 8, "downsamples": 3},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump({"command": command}), encoding="utf-8")
    (folder / "inference.json").write_text(json.dumps(generator), encoding="utf-8")
    (folder / "selection.json").write_text(json.dumps({"checkpoint": "best.ckpt"}), encoding="utf-8")
    return folder


@pytest.fixture
def run():
    """``brainlearn ...`` through the CLI entry point."""
    return lambda *args: main(["-q", *[str(a) for a in args]])


@pytest.mark.parametrize("axcodes", ["LAS", "LPI"])
def test_from_canonical_gives_back_the_file_array(tmp_path, axcodes):
    path = _save(tmp_path / f"{axcodes}.nii.gz", _volume(), axcodes)
    canonical = read_image(path, canonical=True)
    assert "".join(nib.aff2axcodes(canonical.affine)) == "RAS"
    original = nib.load(path)
    np.testing.assert_array_equal(from_canonical(canonical.array, original.affine), original.get_fdata())


@pytest.mark.parametrize(
    ("axcodes", "downsample", "shape", "command"),
    [
        ("RAS", 1, SHAPE, "train sharegan"),
        ("LAS", 1, SHAPE, "train joint"),
        ("LPI", 2, (33, 40, 23), "train sharegan"),
    ],
)
def test_output_lies_on_the_input_grid_with_its_header(run, tmp_path, axcodes, downsample, shape, command):
    gan = _fake_run(tmp_path / "gan", command=command, downsample=downsample)
    source = _save(tmp_path / "sub-01_T1w.nii.gz", _volume(shape), axcodes)
    assert run("synthesize", "--checkpoint", gan, "--in", source, "--out", tmp_path / "out") == 0

    written, original = nib.load(tmp_path / "out" / "sub-01_T1w_pet.nii.gz"), nib.load(source)
    assert written.shape == original.shape and nib.aff2axcodes(written.affine) == tuple(axcodes)
    np.testing.assert_allclose(written.affine, original.affine)
    for field in ("qform_code", "sform_code", "pixdim", "xyzt_units"):
        np.testing.assert_array_equal(written.header[field], original.header[field])
    np.testing.assert_allclose(written.header.get_qform(), original.header.get_qform())
    assert written.get_data_dtype() == np.float32 and written.dataobj.slope == 1 and written.dataobj.inter == 0
    values = written.get_fdata()
    assert np.isfinite(values).all() and 0 <= values.min() and values.max() <= 1 and values.std() > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["synthesize/n"] == 1 and metrics["synthesize/failed"] == 0
    assert (tmp_path / "out" / "figures" / "synthesized.png").stat().st_size > 0


def test_output_follows_the_anatomy_not_the_array_order(tmp_path):
    generator, _ = load_generator(_fake_run(tmp_path / "gan"))
    outputs = []
    for axcodes in ("RAS", "LAS", "LPI"):
        source = _save(tmp_path / f"{axcodes}.nii.gz", _volume(), axcodes)
        synthesize_file(generator, source, tmp_path / f"{axcodes}_pet.nii.gz", alpha=MRI_TO_PET)
        outputs.append(read_image(tmp_path / f"{axcodes}_pet.nii.gz", canonical=True))
    for other in outputs[1:]:  # the same brain in another voxel order: the same synthesized brain in world space
        np.testing.assert_allclose(other.affine, outputs[0].affine)
        np.testing.assert_allclose(other.array, outputs[0].array, atol=1e-6)


def test_downsampled_output_is_upsampled_to_the_input_shape(tmp_path):
    generator, _ = load_generator(_fake_run(tmp_path / "gan"))
    out = synthesize_volume(generator, _volume((33, 40, 23)), alpha=MRI_TO_PET, downsample=2)
    assert out.shape == (33, 40, 23) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_the_two_directions_differ(run, tmp_path):
    gan = _fake_run(tmp_path / "gan")
    source = _save(tmp_path / "scan.nii.gz", _volume())
    assert run("synthesize", "--checkpoint", gan, "--in", source, "--out", tmp_path / "pet") == 0
    args = ("--direction", "pet-to-mri", "--out", tmp_path / "mri")
    assert run("synthesize", "--checkpoint", gan, "--in", source, *args) == 0
    pet = nib.load(tmp_path / "pet" / "scan_pet.nii.gz").get_fdata()
    mri = nib.load(tmp_path / "mri" / "scan_t1.nii.gz").get_fdata()  # named by the output modality
    assert np.abs(pet - mri).mean() > 1e-3
    generator, _ = load_generator(gan)
    volume = _volume()
    assert not np.allclose(
        synthesize_volume(generator, volume, alpha=MRI_TO_PET), synthesize_volume(generator, volume, alpha=PET_TO_MRI)
    )


def test_table_mode_reports_bad_files_goes_on_and_resumes(run, tmp_path):
    gan = _fake_run(tmp_path / "gan")
    data = tmp_path / "data"
    good, pet_only = _save(data / "sub-01.nii.gz", _volume()), _save(data / "sub-04_pet.nii.gz", _volume())
    nan = _volume()
    nan[5, 5, 5] = np.nan
    with_nan = _save(data / "sub-02.nii.gz", nan)
    truncated = data / "sub-03.nii.gz"
    truncated.write_bytes(good.read_bytes()[:300])
    four_d = data / "sub-05.nii"
    nib.save(nib.Nifti1Image(np.stack([_volume()] * 2, -1), np.eye(4)), four_d)
    rows = [("sub-01", good, ""), ("sub-02", with_nan, ""), ("sub-03", truncated, ""), ("sub-04", "", pet_only)]
    rows.append(("sub-05", four_d, ""))
    table = tmp_path / "participants.tsv"
    pd.DataFrame(rows, columns=["participant_id", "t1", "pet"]).to_csv(table, sep="\t", index=False)

    out = tmp_path / "out"
    assert run("synthesize", "--checkpoint", gan, "--table", table, "--out", out) == 0
    summary = pd.read_csv(out / "synthesized.tsv", sep="\t").set_index("participant_id")
    assert list(summary["status"]) == ["synthesized", "failed", "failed", "skipped", "failed"]
    assert "NaN" in summary.loc["sub-02", "reason"] and "truncated" in summary.loc["sub-03", "reason"]
    assert "4D" in summary.loc["sub-05", "reason"] and summary.loc["sub-04", "reason"] == "no t1 image"
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["sub-01_ses-01_pet.nii.gz"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["synthesize/n"], metrics["synthesize/failed"], metrics["synthesize/skipped"]) == (1, 3, 1)
    assert "failed: sub-02 ses-01" in (out / "log.txt").read_text()
    assert (out / "figures" / "synthesized.png").exists()

    kept = out / "sub-01_ses-01_pet.nii.gz"
    stamp = kept.stat().st_mtime_ns
    _save(with_nan, _volume(seed=2))  # the bad scan is fixed; rerunning synthesizes it and keeps the rest
    assert run("synthesize", "--checkpoint", gan, "--table", table, "--out", out) == 0
    summary = pd.read_csv(out / "synthesized.tsv", sep="\t").set_index("participant_id")
    assert summary.loc["sub-01", "status"] == "kept" and summary.loc["sub-02", "status"] == "synthesized"
    assert kept.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--table", "participants.tsv"), "give either --in FILE (one image) or --table (one image per session)"),
        (("--direction", "pet2mri"), "--direction must be mri-to-pet or pet-to-mri, not 'pet2mri'. Did you mean"),
    ],
)
def test_clear_errors_for_bad_requests(run, tmp_path, capsys, args, message):
    gan = _fake_run(tmp_path / "gan")
    source = _save(tmp_path / "scan.nii.gz", _volume())
    assert run("synthesize", "--checkpoint", gan, "--in", source, "--out", tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err


def test_a_table_needs_an_output_folder(run, tmp_path, capsys):
    gan = _fake_run(tmp_path / "gan")
    assert run("synthesize", "--checkpoint", gan, "--table", tmp_path / "t.tsv", "--out", tmp_path / "p.nii.gz") == 2
    assert "an image file name takes one --in image; a table needs a folder" in capsys.readouterr().err


def test_nothing_to_synthesize(run, tmp_path, capsys):
    assert run("synthesize", "--checkpoint", _fake_run(tmp_path / "gan"), "--out", tmp_path / "out") == 2
    assert "nothing to synthesize: give --in FILE (one image) or --table FILE / --bids DIR." in capsys.readouterr().err


def test_a_run_of_another_kind_or_model_is_refused(run, tmp_path, capsys):
    source = _save(tmp_path / "scan.nii.gz", _volume())
    classify = _fake_run(tmp_path / "classify", command="train classify")
    assert run("synthesize", "--checkpoint", classify, "--in", source, "--out", tmp_path / "a") == 2
    assert "a 'train classify' run; this command takes train sharegan or train joint runs" in capsys.readouterr().err
    other = _fake_run(tmp_path / "other", saved_width=4)  # config.yaml says width 4, the weights are width 2
    assert run("synthesize", "--checkpoint", other, "--in", source, "--out", tmp_path / "b") == 2
    assert "its generator is not this network's" in capsys.readouterr().err


def test_out_may_name_the_output_image_and_the_record_goes_beside_it(run, tmp_path):
    gan = _fake_run(tmp_path / "gan")
    source = _save(tmp_path / "scan.nii.gz", _volume(), "LAS")
    assert run("synthesize", "--checkpoint", gan, "--in", source, "--out", tmp_path / "sub-01_pet.nii.gz") == 0
    written, original = nib.load(tmp_path / "sub-01_pet.nii.gz"), nib.load(source)
    assert written.shape == original.shape and np.allclose(written.affine, original.affine)
    record = tmp_path / "sub-01_pet_synthesize"
    assert (record / "config.yaml").exists() and (record / "figures" / "synthesized.png").exists()
