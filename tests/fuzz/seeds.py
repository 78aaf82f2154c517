"""The inputs fuzzing starts from: tiny valid files of every kind brainlearn reads, and hand-made hostile ones.

Valid seeds are small (12×10×8 volumes, a four-row table) so that each mutated input reads in milliseconds.
Hostile seeds are what random mutation would take years to stumble on: YAML and pickles that name Python
functions, alias bombs (a small file whose value is exponentially large when printed), deep nesting, numbers
with thousands of digits, and lengths of 2^62 bytes.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (12, 10, 8)  # non-cubic, so that a swapped axis shows
OBLIQUE = np.array([[-1.5, 0.1, 0, 90], [0, 1.2, 0.2, -126], [0.1, 0, 2.0, -72], [0, 0, 0, 1]])


def nifti_seeds(folder: Path) -> dict[str, bytes]:
    """Image files by name: NIfTI-1 and -2, plain and gzip, float, scaled int16, uint8, qform or sform only, .npy."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t1 = rng.normal(100, 20, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 3:7, 2:5] = 1
    labels[8, 5, 4] = 3
    scaled = nib.Nifti1Image(rng.integers(0, 3000, SHAPE).astype(np.int16), OBLIQUE)
    scaled.header.set_slope_inter(0.5, 10.0)
    qform_only = nib.Nifti1Image(t1, None)
    qform_only.set_qform(np.diag([2.0, 1.5, 1.0, 1.0]), code=1)
    qform_only.set_sform(None, code=0)
    images = {
        "t1.nii.gz": nib.Nifti1Image(t1, OBLIQUE),
        "t1.nii": nib.Nifti1Image(t1, OBLIQUE),
        "scaled_int16.nii.gz": scaled,
        "uint8.nii": nib.Nifti1Image(labels * 40 + 7, np.eye(4)),
        "nifti2.nii.gz": nib.Nifti2Image(t1.astype(np.float64), OBLIQUE),
        "trailing_1.nii.gz": nib.Nifti1Image(t1[..., None], OBLIQUE),
        "qform_only.nii": qform_only,
        "mask.nii.gz": nib.Nifti1Image(labels, OBLIQUE),
        "mask_int16.nii": nib.Nifti1Image(labels.astype(np.int16), np.eye(4)),
    }
    extended = nib.Nifti1Image(t1, OBLIQUE)
    extended.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"fuzz seed with an extension"))
    images["extension.nii"] = extended
    for name, image in images.items():
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, folder / name)
    np.save(folder / "t1.npy", t1)
    np.save(folder / "scalar.npy", np.float32(3.0))  # a 0-D array: no image at all
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


TABLE = (
    "participant_id\tsession_id\tt1\tpet\tdiagnosis\tage\tsex\tsite\tsplit\tscanner\n"
    "sub-01\tses-01\timages/sub-01_T1w.nii.gz\timages/sub-01_pet.nii.gz\tCN\t72.5\tF\tA\ttrain\tPrisma\n"
    "sub-01\tses-02\timages/sub-01_ses-02_T1w.nii.gz\tn/a\tCN\t74\tF\tA\ttrain\tPrisma\n"
    "sub-02\t\timages/sub-02_T1w.nii.gz\t\tAD\t\tM\tB\ttest\t\n"
    "sub-03\tses-01\t\timages/sub-03_pet.nii.gz\tMCI\t80.25\t\tB\tval\tTrio\n"
)


def table_seeds(folder: Path) -> dict[str, bytes]:
    """Participants tables (TSV, CSV with a quoted cell, ``;``-separated .txt) and the image files they name."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for line in TABLE.splitlines()[1:]:
        for cell in line.split("\t"):
            if cell.startswith("images/"):
                (folder / cell).write_bytes(b"")
    csv = TABLE.replace(",", "").replace("\t", ",").replace("Prisma\n", '"Prisma, 3T"\n', 1)
    return {
        "participants.tsv": TABLE.encode(),
        "participants.csv": csv.encode(),
        "participants.txt": TABLE.replace("\t", ";").encode(),
        "bom_crlf.tsv": ("\ufeff" + TABLE.replace("\n", "\r\n")).encode(),
    }


BIDS_FILES = {
    "dataset_description.json": '{"Name": "fuzz", "BIDSVersion": "1.9.0"}',
    "participants.tsv": "participant_id\tdiagnosis\tage\tsex\tsite\nsub-01\tCN\t70\tF\tA\nsub-02\tAD\t81.5\tM\tB\n"
    "sub-03\tMCI\tn/a\tn/a\tA\n",
    "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz": "",
    "sub-01/ses-01/anat/sub-01_ses-01_T1w.json": '{"RepetitionTime": 2.3}',
    "sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz": "",
    "sub-01/ses-02/pet/sub-01_ses-02_pet.nii.gz": "",
    "sub-02/anat/sub-02_run-01_T1w.nii.gz": "",
    "sub-02/anat/sub-02_run-02_T1w.nii.gz": "",
    "sub-02/anat/sub-02_FLAIR.nii": "",
    "sub-02/anat/sub-02_label-lesion_mask.nii.gz": "",
    "sub-03/pet/sub-03_trc-FDG_pet.nii.gz": "",
    "derivatives/sub-01/anat/sub-01_T1w.nii.gz": "",
}


def bids_seed(folder: Path) -> Path:
    """A tiny BIDS folder: sessions and none, runs, T1w, FLAIR, mask and PET, sidecars and derivatives."""
    for name, text in BIDS_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


CONFIG_DEFAULTS = {
    "data": {"table": "participants.tsv", "modalities": ["t1"], "batch_size": 2, "canonical": True, "cache": None},
    "optim": {"lr": 1e-3, "weight_decay": 0.0},
    "model": {"name": "resnet18", "options": {}},
    "trainer": {"max_epochs": 3, "seed": 0},
}
CONFIG_PATH_KEYS = ("data.table", "data.cache")
CONFIG = """\
# a training config
data:
  table: tables/participants.tsv
  modalities: [t1, pet]
  batch_size: 4
  canonical: false
optim:
  lr: 1.0e-4
  weight_decay: 0.01
model:
  name: densenet121
  options: {dropout: 0.1, widths: [8, 16]}
trainer:
  max_epochs: 10
"""
# Ten levels of nine aliases in a free section: 1 kB of YAML whose value prints as 9^10 items.
BILLION_LAUGHS = "model:\n  options:\n    a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)
CONFIG_HOSTILE = {
    "anchors.yaml": "base: &base {lr: 0.5, weight_decay: 0.1}\noptim:\n  <<: *base\ntrainer: {max_epochs: 2}\n",
    "python_apply.yaml": "data: !!python/object/apply:os.system ['echo pwned']\n",
    "python_name.yaml": "model:\n  name: !!python/name:os.system\n",
    "billion_laughs.yaml": BILLION_LAUGHS + "trainer:\n  max_epochs: *j\n",
    "billion_laughs_section.yaml": BILLION_LAUGHS + "optim: *j\n",
    "deep.yaml": "model:\n  options:\n    x: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep_900.yaml": "model:\n  options:\n    x: " + "{a: " * 900 + "1" + "}" * 900 + "\n",
    "recursive_alias.yaml": "model:\n  options: &a {x: [*a]}\n",
    "long_int.yaml": "trainer:\n  max_epochs: " + "9" * 5000 + "\n",
    "huge_float.yaml": "optim:\n  lr: 1e999\n  weight_decay: .nan\n",
    "list.yaml": "- data\n- optim\n",
    "scalar.yaml": "just text\n",
    "binary.yaml": "data:\n  table: !!binary aGVsbG8=\n",
    "set.yaml": "data:\n  modalities: !!set {t1, pet}\n",
    "timestamp.yaml": "data:\n  table: 2001-12-14t21:59:43.10-05:00\n",
    "two_documents.yaml": "data: {batch_size: 1}\n---\ndata: {batch_size: 2}\n",
    "empty.yaml": "",
}
OVERRIDES = (
    "trainer.max_epochs=5",
    "optim.lr=1e-4",
    "data.modalities=[t1, pet]",
    "data.modalities=t1,pet",
    "model.options={depth: 3}",
    "data.cache=",
    "data.canonical=false",
)


def config_seeds() -> dict[str, bytes]:
    return {"config.yaml": CONFIG.encode(), **{name: text.encode() for name, text in CONFIG_HOSTILE.items()}}


TRAIN_PAIRS = [
    ("/data/x/lineared/train/0_141_S_0810.npy", "/data/x/pet/train/1_002_S_0295.npy", 0),
    ("/data/x/lineared/train/1_002_S_0295.npy", "/data/x/pet/train/0_141_S_0810.npy", 1),
    ("/data/x/lineared/train/0_033_S_0734.npy", "/data/x/pet/train/0_033_S_0734.npy", 0),
]
TEST_PAIRS = [("/data/ext/0_sub-007.npy", 0), ("/data/ext/1_sub-008.npy", 1), ("sub-009_T1w.nii.gz", 1)]


def pair_seeds() -> dict[str, bytes]:
    """Pair lists in every pickle protocol, and pickles that name functions, nest deeply or declare huge sizes."""
    seeds = {f"train_p{p}.pkl": pickle.dumps(TRAIN_PAIRS, protocol=p) for p in (0, 2, 4, 5)}
    seeds["test_p4.pkl"] = pickle.dumps(TEST_PAIRS, protocol=4)
    seeds.update(
        {
            "global_os_system.pkl": b"cos\nsystem\n(S'echo pwned'\ntR.",
            "stack_global.pkl": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.",
            "persistent_id.pkl": b"\x80\x02]Pfile\n\x85.",
            "deep_list.pkl": b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".",
            "deep_label.pkl": _one_pair(b"]" * 100_000 + b"a" * 99_999),
            "alias_bomb.pkl": _one_pair(_alias_bomb(40)),
            "alias_bomb_path.pkl": b"\x80\x02]" + _alias_bomb(40) + b"\x8c\x01x\x4b\x00\x87a.",
            "huge_unicode8.pkl": b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc.",
            "huge_bytes8.pkl": b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc.",
            "huge_binunicode.pkl": b"\x80\x02X" + struct.pack("<I", 2**32 - 1) + b"abc.",
            "huge_long4.pkl": b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01.",
            "huge_frame.pkl": b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"].",
            "long_text_int.pkl": b"(l(S'/a/0_x.npy'\nL" + b"9" * 100_000 + b"L\nta.",
            "dict.pkl": pickle.dumps({"pairs": TRAIN_PAIRS}),
            "bool_label.pkl": pickle.dumps([("/a/0_x.npy", True)]),
            "bytes_path.pkl": pickle.dumps([(b"/a/0_x.npy", 0)]),
            "trailing.pkl": pickle.dumps(TEST_PAIRS) + b"more",
            "empty.pkl": pickle.dumps([]),
        }
    )
    return seeds


def _alias_bomb(depth: int) -> bytes:
    """Pickle opcodes pushing a list whose repr is 2^depth long: x0 = [], x(k+1) = [xk, xk] through the memo."""
    ops = [b"]q\x000"]  # EMPTY_LIST, BINPUT 0, POP
    for k in range(depth):
        ops.append(b"(h" + bytes([k]) + b"h" + bytes([k]) + b"lq" + bytes([k + 1]) + b"0")  # MARK GET GET LIST PUT POP
    return b"".join(ops) + b"h" + bytes([depth])  # BINGET: push the last


def _one_pair(label_ops: bytes) -> bytes:
    """A list of one (mri, label) pair whose label is pushed by ``label_ops`` (protocol 2)."""
    return b"\x80\x02]\x8c\x0a/a/0_x.npy" + label_ops + b"\x86a."


def checkpoint_seed(path: Path) -> bytes:
    """A small Lightning-like checkpoint written by torch.save (zip format)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    checkpoint = {
        "epoch": 1,
        "global_step": 7,
        "state_dict": {"model.weight": torch.randn(8, 4, generator=generator), "model.bias": torch.zeros(8)},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]}],
        "hyper_parameters": {"lr": 0.001, "modalities": ["t1"]},
    }
    torch.save(checkpoint, path)
    return path.read_bytes()


def dicom_seeds(folder: Path) -> dict[str, bytes]:
    """One MR slice with the header fields the converter reads: as .dcm, .dcm.gz and without a suffix."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    values = {
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
        "SOPInstanceUID": "1.2.3.4.5.6",
        "Modality": "MR",
        "PatientID": "P0042",
        "PatientName": "Doe^Jane",
        "PatientBirthDate": "19420317",
        "StudyInstanceUID": "1.2.3.4",
        "StudyDate": "20240101",
        "StudyTime": "101010",
        "SeriesInstanceUID": "1.2.3.4.5",
        "SeriesNumber": 3,
        "SeriesDescription": "t1_mprage_sag",
        "ProtocolName": "t1_mprage",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        "Rows": 4,
        "Columns": 4,
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 0,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "PixelData": bytes(32),
    }
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / "slice.dcm", enforce_file_format=True)
    data = (folder / "slice.dcm").read_bytes()
    return {"slice.dcm": data, "slice.dcm.gz": gzip.compress(data, mtime=0), "IM0001": data}
