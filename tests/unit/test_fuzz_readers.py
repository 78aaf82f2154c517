"""Fuzzing every reader: a short seeded campaign per target (tests/fuzz), then one test per bug it found.

The campaign asserts that no mutated or truncated input crashes a reader, hangs it or is silently read wrong;
``make fuzz`` runs the long campaign (counts in docs/reliability.md). Each regression test rebuilds the input
that broke a reader and asserts the message it now gets.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))

import seeds  # noqa: E402
from harness import memory_limit, run_target  # noqa: E402
from targets import TARGETS  # noqa: E402

from brainlearn.errors import BrainlearnError, CacheMismatchError  # noqa: E402

# Inputs per target in `make test` (about 25 s in all on 2 cores); `make fuzz` runs thousands.
ITERATIONS = {
    "read_image": 500,
    "read_mask": 400,
    "header_shape": 400,
    "read_table": 400,
    "read_bids": 250,
    "load_config": 400,
    "read_pairs": 250,
    "load_checkpoint": 400,
    "cache": 400,
    "dicom_header": 400,
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_campaign_has_no_crash_hang_or_wrong_result(name, tmp_path):
    target = TARGETS[name](tmp_path / "work")
    with memory_limit(3):
        counts = run_target(target, iterations=ITERATIONS[name], seed=0, timeout=10, out=tmp_path / "failures")
    failures = [
        f"{f.kind} {f.signature}: input {f.index} ({f.case.seed_name}; {'; '.join(f.case.steps)[:200]}) "
        f"kept at {f.saved}; rerun: python tests/fuzz/campaign.py --targets {name} --start {f.index} --iterations 1"
        for f in counts.failures[:5]
    ]
    assert not failures, "\n".join(failures)
    assert counts.accepted > 0 and counts.refused > 0  # the seeds read, and mutations get refused


# ------------------------------------------------------------------------------------------------- NIfTI and .npy
@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    seeds.nifti_seeds(folder)
    return folder


def _set_header(path: Path, out: Path, **fields) -> Path:
    """``path`` (a NIfTI-1 file, gzip or not) with header fields overwritten, written to ``out``."""
    data = path.read_bytes()
    gz = path.name.endswith(".gz")
    content = bytearray(gzip.decompress(data) if gz else data)
    header = np.frombuffer(bytes(content[:348]), nib.nifti1.header_dtype).copy()
    for name, value in fields.items():
        header[name] = value
    content[:348] = header.tobytes()
    out.write_bytes(gzip.compress(bytes(content)) if out.name.endswith(".gz") else bytes(content))
    return out


def test_npy_with_a_mangled_header_is_refused(images, tmp_path):
    from brainlearn.io import read_image

    data = (images / "t1.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:14] + data[128:])  # tokenize.TokenError inside numpy
    with pytest.raises(BrainlearnError, match=r"cut\.npy: the file is truncated or corrupt"):
        read_image(tmp_path / "cut.npy")


def test_zero_dimensional_npy_is_not_a_mask(images):
    from brainlearn.io import read_mask

    with pytest.raises(BrainlearnError, match=r"scalar\.npy: expected a 3D image, got shape \(\) \(0D\)"):
        read_mask(images / "scalar.npy")


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (-np.inf, r"bad\.nii: the file is truncated or corrupt \(cannot convert float infinity to integer\)"),
        (3.4e38, r"bad\.nii: the header's data offset \(vox_offset\) is 3\.4e\+38; the header is corrupt"),
    ],
)
def test_absurd_vox_offset_is_refused(images, tmp_path, offset, message):
    from brainlearn.io import read_mask

    with pytest.raises(BrainlearnError, match=message):
        read_mask(_set_header(images / "uint8.nii", tmp_path / "bad.nii", vox_offset=offset))


@pytest.mark.parametrize(("datatype", "bitpix", "kind"), [(2304, 32, "RGB"), (32, 64, "complex")])
def test_rgb_and_complex_voxels_are_refused(images, tmp_path, datatype, bitpix, kind):
    from brainlearn.io import read_image

    path = _set_header(images / "t1.nii", tmp_path / f"{kind}.nii", datatype=datatype, bitpix=bitpix)
    with pytest.raises(BrainlearnError, match=rf"{kind}\.nii: the voxels are of type .* integer or real values"):
        read_image(path)


@pytest.mark.parametrize("name", ["t1.nii.gz", "t1.nii"])
def test_header_declaring_gigabytes_is_refused_without_allocating_them(images, tmp_path, name):
    from brainlearn.io import read_image

    dims = np.array([3, 1000, 1000, 1000, 1, 1, 1, 1], np.int16)
    path = _set_header(images / name, tmp_path / f"big-{name}", dim=dims)
    with memory_limit(1), pytest.raises(BrainlearnError, match=r"declares 4,000,000,352 bytes of header and voxels"):
        read_image(path)  # 4 GB of float32 declared: gzip read them in one allocation before


@pytest.mark.parametrize("name", ["extension.nii", "extension.nii.gz"])
def test_huge_extension_size_is_refused_before_allocation(images, tmp_path, name):
    from brainlearn.io import header_shape

    content = bytearray((images / "extension.nii").read_bytes())
    content[352:356] = struct.pack("<i", 2**31 - 16)
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(content)) if name.endswith(".gz") else bytes(content))
    with memory_limit(1), pytest.raises(BrainlearnError, match=r"extension declares 2,147,483,632 bytes, more than"):
        header_shape(path)  # nibabel reads an extension in one read of its declared size


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # nibabel's zooms of 1e200 mm
def test_affine_whose_determinant_overflows_is_refused(images, tmp_path):
    from brainlearn.io import read_image

    image = nib.Nifti2Image(np.asarray(nib.load(images / "t1.nii").dataobj), np.diag([1e200, 1e200, 1e200, 1]))
    nib.save(image, tmp_path / "vast.nii")
    with pytest.raises(BrainlearnError, match=r"vast\.nii: the affine .* is not invertible"):
        read_image(tmp_path / "vast.nii")


def test_canonical_read_refuses_an_axis_without_direction(images, tmp_path):
    from brainlearn.io import read_image

    path = _set_header(images / "uint8.nii", tmp_path / "flat.nii", srow_y=[0, 1, 3.4e38, 0])
    with pytest.raises(BrainlearnError, match=r"flat\.nii: the affine gives no orientation to every axis"):
        read_image(path, canonical=True)


def test_header_shape_refuses_absurd_and_missing_dimensions(images, tmp_path):
    from brainlearn.io import header_shape

    huge = _set_header(images / "t1.nii", tmp_path / "huge.nii", dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])
    with pytest.raises(BrainlearnError, match=r"huge\.nii: the header declares \(30000, 30000, 30000\) voxels"):
        header_shape(huge)
    with pytest.raises(BrainlearnError, match=r"scalar\.npy: expected a 3D image"):
        header_shape(images / "scalar.npy")


# ------------------------------------------------------------------------------------------------------- configs
def _config(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path / name


def _load(path: Path):
    from brainlearn.config import load_config

    return load_config(seeds.CONFIG_DEFAULTS, path=path)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("deep.yaml", r"deep\.yaml line \d+, column \d+: not valid YAML \(exceeded maximum nesting depth\)"),
        ("deep_900.yaml", r"deep_900\.yaml: values nested more than 50 levels deep"),
        ("recursive_alias.yaml", r"recursive_alias\.yaml: values nested more than 50 levels deep"),
        ("long_int.yaml", r"long_int\.yaml: a value cannot be read \(Exceeds the limit \(4300 digits\)"),
        ("huge_float.yaml", r"huge_float\.yaml: 'optim\.lr' must be a finite number, got '1e999'"),
    ],
)
def test_hostile_configs_are_refused(tmp_path, seed, message):
    with pytest.raises(BrainlearnError, match=message):
        _load(_config(tmp_path, seeds.CONFIG_HOSTILE[seed], seed))


def test_impossible_date_and_nan_are_refused(tmp_path):
    with pytest.raises(BrainlearnError, match=r"date\.yaml: a value cannot be read \(month must be in 1\.\.12\)"):
        _load(_config(tmp_path, "data:\n  table: 2001-13-45\n", "date.yaml"))
    with pytest.raises(BrainlearnError, match=r"'optim\.weight_decay' must be a finite number, got nan"):
        _load(_config(tmp_path, "optim:\n  weight_decay: .nan\n"))


@pytest.mark.parametrize("seed", ["billion_laughs.yaml", "billion_laughs_section.yaml"])
def test_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path, seed):
    start = time.monotonic()
    with pytest.raises(BrainlearnError, match=r"must be|is a section") as error:
        _load(_config(tmp_path, seeds.CONFIG_HOSTILE[seed], seed))
    assert time.monotonic() - start < 2 and len(str(error.value)) < 400  # printing the value took 9^10 items


def test_override_with_an_unreadable_value_names_the_override():
    from brainlearn.config import parse_override

    with pytest.raises(BrainlearnError, match=r"override 'trainer\.max_epochs=9{20}.*a value cannot be read"):
        parse_override("trainer.max_epochs=" + "9" * 5000)


# --------------------------------------------------------------------------------------------------- pair lists
@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("alias_bomb.pkl", r"the label \[\[\[.*\]\]\] \(list\) is not an int"),
        ("alias_bomb_path.pkl", r"the path \[\[\[.*\]\]\] is a list, expected a string"),
        ("deep_label.pkl", r"the label \[+\.\.\.\]+ \(list\) is not an int"),
        ("huge_bytes8.pkl", r"not a pickle, or truncated \(expected 4611686018427387904 bytes in a bytes8"),
        ("long_text_int.pkl", r"not a pickle, or truncated \(.*4300 digits"),
    ],
)
def test_hostile_pair_lists_are_refused_quickly_without_allocating(tmp_path, seed, message):
    from brainlearn.data.pairs import read_pairs

    (tmp_path / seed).write_bytes(seeds.pair_seeds()[seed])
    start = time.monotonic()
    with memory_limit(1), pytest.raises(BrainlearnError, match=rf"{seed}: .*{message}"):
        read_pairs(tmp_path / seed)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("bytes.pkl", b"\x80\x03B" + struct.pack("<I", 2**31 - 1) + b"abc.", "expected 2147483647 bytes"),
        ("memo.pkl", b"\x80\x02]r" + struct.pack("<I", 2**31) + b".", r"corrupt \(memo slot 2147483648\)"),
    ],
    ids=["bytes-length", "memo-slot"],
)
def test_pickle_sizes_are_checked_before_the_unpickler_allocates(tmp_path, name, data, message):
    from brainlearn.data.pairs import read_pairs

    (tmp_path / name).write_bytes(data)
    with memory_limit(1), pytest.raises(BrainlearnError, match=rf"{name}: not a pickle, or .*{message}"):
        read_pairs(tmp_path / name)


# -------------------------------------------------------------------------------------- cache, checkpoint, DICOM
def _json_set(text: str, **values) -> str:
    return json.dumps(json.loads(text) | values)


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory) -> Path:
    target = TARGETS["cache"](tmp_path_factory.mktemp("cache"))
    return target.built["float16"]


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("manifest.json", lambda text: text[:-9], r"manifest\.json: not readable as JSON"),
        ("manifest.json", lambda text: _json_set(text, canonical="no"), "its canonical is 'no'"),
        ("manifest.json", lambda text: _json_set(text, modalities=True), "its modalities is True"),
        ("manifest.json", lambda text: _json_set(text, dtypes={"t1": "float16", "mask": "<f8"}), "its dtypes is"),
        ("index.tsv", lambda text: "\n".join(text.split("\n")[:-2]) + "\n", "2 sessions, manifest.json says 3"),
        ("index.tsv", lambda text: text.replace("[12, 10, 8]", "[12, 10]", 1), r"t1_shape: '\[12, 10\]' is not 3"),
        ("index.tsv", lambda text: text.replace("\t0\t", "\t-5\t", 1), r"t1_offset: '-5' is not an element offset"),
        ("index.tsv", lambda text: text.replace("sub-00", "sub\xff", 1).encode("latin-1"), "not readable as a table"),
    ],
    ids=["json-cut", "canonical", "modalities", "dtypes", "row-deleted", "shape", "offset", "not-utf8"],
)
def test_damaged_cache_files_are_refused(built_cache, tmp_path, file, edit, message):
    from brainlearn.data.cache import Cache

    folder = shutil.copytree(built_cache, tmp_path / "cache")
    edited = edit((folder / file).read_text(encoding="utf-8"))
    (folder / file).write_bytes(edited if isinstance(edited, bytes) else edited.encode())
    with pytest.raises(CacheMismatchError, match=rf"{message}.*the cache is damaged .* --overwrite"):
        Cache(folder)


def test_damaged_tensor_record_of_a_checkpoint_is_refused(tmp_path):
    from brainlearn.checkpoints import load_checkpoint

    data = bytearray(seeds.checkpoint_seed(tmp_path / "good.ckpt"))
    with zipfile.ZipFile(tmp_path / "good.ckpt") as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("data/0"))
    name_length, extra_length = struct.unpack_from("<HH", data, record.header_offset + 26)  # the local header's
    data[record.header_offset + 30 + name_length + extra_length + 5] ^= 0xFF
    (tmp_path / "last.ckpt").write_bytes(bytes(data))
    with pytest.raises(BrainlearnError, match=r"last\.ckpt: the checkpoint is damaged .*data/0 fails its CRC-32"):
        load_checkpoint(tmp_path / "last.ckpt")  # torch.load itself returns the flipped weights


def test_damaged_dicom_files_are_skipped_without_allocating(tmp_path):
    from brainlearn.convert.dicom import read_header

    dicoms = seeds.dicom_seeds(tmp_path / "dicom")
    assert read_header(tmp_path / "dicom" / "slice.dcm").series_number == 3
    data = dicoms["slice.dcm"]
    at = data.index(b"LO\x0e\x00t1_mprage_sag")  # SeriesDescription: VR LO, length 14
    broken = {
        "vr.dcm": data[:at] + b"Lo" + data[at + 2 :],  # an unknown value representation
        "cut.dcm.gz": gzip.compress(data)[:-40],  # zlib.error
        "long.dcm": data[:at] + b"UN\x00\x00" + struct.pack("<I", 2**32 - 2) + data[at + 4 :],  # a 4 GiB element
    }
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        with memory_limit(1):
            assert read_header(tmp_path / name) is None, name


# -------------------------------------------------------------------------------------------------- tables, BIDS
def test_bids_folder_with_a_label_that_is_not_alphanumeric_is_refused(tmp_path):
    from brainlearn.data.bids import read_bids

    root = seeds.bids_seed(tmp_path / "bids")
    (root / "sub-01").rename(root / "sub-01 ")  # was read as participant sub-01 (table cells are stripped)
    with pytest.raises(BrainlearnError, match=r"bids: folder\(s\) 'sub-01 ' are not BIDS names"):
        read_bids(root)


def test_table_cut_inside_its_last_row_is_refused(tmp_path):
    from brainlearn.data.tables import read_table

    seeds.table_seeds(tmp_path)
    cut = seeds.TABLE[: seeds.TABLE.index("MCI\t80.25") + 5]  # age 8 of 80.25, sex, site, split lost
    (tmp_path / "cut.tsv").write_text(cut)
    with pytest.raises(BrainlearnError, match=r"cut\.tsv: row\(s\) 4 have fewer cells than the header's 10"):
        read_table(tmp_path / "cut.tsv")


def test_pair_list_naming_a_function_runs_no_code(tmp_path):
    from brainlearn.data.pairs import read_pairs

    marker = tmp_path / "ran"
    (tmp_path / "evil.pkl").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(BrainlearnError, match=r"evil\.pkl: the file contains an object of type os\.system"):
        read_pairs(tmp_path / "evil.pkl")
    assert not marker.exists()
