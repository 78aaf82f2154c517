import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from brainlearn.data import pairs
from brainlearn.data.pairs import read_pairs
from brainlearn.data.tables import TABLE_COLUMNS
from brainlearn.errors import BrainlearnError

MRI = "/data/x/lineared/{}/{}.npy"
PET = "/data/x/pet/{}/{}.npy"


def touch(path: str) -> None:
    """What a malicious pickle would run; the test proves it never runs."""
    Path(path).touch()


class Payload:
    def __init__(self, function, argument: str):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def write_pickle(path: Path, obj: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 5])
def test_paired_list_round_trip(tmp_path: Path, protocol: int):
    items = [
        (MRI.format("test", "0_141_S_0810"), PET.format("test", "0_141_S_0810"), 0),
        [MRI.format("test", "1_002_S_0295"), PET.format("test", "1_002_S_0295"), 1],
    ]
    table = read_pairs(write_pickle(tmp_path / "test.pkl", items, protocol), split="test")
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["participant_id"].tolist() == ["141_S_0810", "002_S_0295"]
    assert table["t1"].tolist() == [MRI.format("test", "0_141_S_0810"), MRI.format("test", "1_002_S_0295")]
    assert table["pet"].tolist() == [PET.format("test", "0_141_S_0810"), PET.format("test", "1_002_S_0295")]
    assert table["diagnosis"].tolist() == ["CN", "AD"]
    assert table["split"].tolist() == ["test", "test"] and table["session_id"].tolist() == [
        "ses-01",
        "ses-01",
    ]


def test_unpaired_pet_becomes_a_row_of_its_own_participant(tmp_path: Path):
    items = [
        (MRI.format("train", "0_141_S_0810"), PET.format("train", "1_002_S_0295"), 0),
        (MRI.format("train", "1_002_S_0295"), PET.format("train", "0_011_S_0002"), 1),
    ]
    table = read_pairs(write_pickle(tmp_path / "train.pkl", items), split="train").set_index("participant_id")
    assert table.index.tolist() == ["141_S_0810", "002_S_0295", "011_S_0002"]
    assert table.loc["141_S_0810", "pet"] is None
    assert table.loc["002_S_0295", "t1"] == MRI.format("train", "1_002_S_0295")
    assert table.loc["002_S_0295", "pet"] == PET.format("train", "1_002_S_0295")
    assert table.loc["011_S_0002", "t1"] is None and table.loc["011_S_0002", "diagnosis"] == "CN"
    assert table["diagnosis"].tolist() == ["CN", "AD", "CN"]


def test_mri_only_list_without_label_prefix(tmp_path: Path):
    items = [("/aibl/002_S_0295.nii.gz", 1), ("/aibl/1_sub_7.npy", 0)]
    table = read_pairs(write_pickle(tmp_path / "aibl.pkl", items))
    assert table["participant_id"].tolist() == ["002_S_0295", "sub_7"]
    assert table["diagnosis"].tolist() == ["AD", "CN"]
    assert table["pet"].isna().all() and table["split"].isna().all()


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, protocol: int):
    marker = tmp_path / "marker"
    payload = pickle.dumps([(Payload(touch, str(marker)), "b.npy", 0)], protocol=protocol)
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(BrainlearnError) as error:
        read_pairs(path)
    assert not marker.exists()
    message = str(error.value)
    assert f"{path}: the file contains an object of type {__name__}.touch" in message
    assert "only reads lists, tuples, strings and numbers" in message and "never runs code" in message
    pickle.loads(payload)  # the same bytes, loaded by plain pickle, do run the payload
    assert marker.exists()


def test_os_system_payload_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "evil.pkl", [Payload(os.system, f"touch {marker}")])
    with pytest.raises(BrainlearnError, match=r"object of type (posix|nt|os)\.system"):
        read_pairs(path)
    assert not marker.exists()


def test_numpy_scalar_label_is_refused(tmp_path: Path):
    path = write_pickle(tmp_path / "np.pkl", [("a.npy", "b.npy", np.int64(1))])
    with pytest.raises(BrainlearnError, match=r"object of type numpy\..*plain ints: pickle int\(label\)"):
        read_pairs(path)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([("a.npy",)], r"element \[0\] of the list is a tuple of 1 items; expected a 2- or 3-tuple"),
        ([("a.npy", "b.npy", "c.npy", 0)], r"element \[0\] of the list is a tuple of 4 items"),
        ([("a.npy", 0), "a.npy"], r"element \[1\] of the list is a str; expected"),
        ([(b"a.npy", 0)], r"element \[0\] of the list: the path b'a.npy' is a bytes, expected a string"),
        ([("a.npy", 2)], r"the label 2 \(int\) is not an int in \(0=CN, 1=AD\)"),
        ([("a.npy", True)], r"the label True \(bool\) is not an int"),
        ([("a.npy", 1.0)], r"the label 1.0 \(float\) is not an int"),
        ({"a.npy": 0}, r"holds a dict, expected a list of \(mri_path, pet_path, label\)"),
        ([], "the list is empty"),
    ],
)
def test_wrong_shapes_are_refused(tmp_path: Path, items: object, expected: str):
    with pytest.raises(BrainlearnError, match=expected):
        read_pairs(write_pickle(tmp_path / "bad.pkl", items))


def test_not_a_pickle_truncated_or_with_trailing_data(tmp_path: Path):
    text = tmp_path / "text.pkl"
    text.write_text("participant_id\tt1\n")
    with pytest.raises(BrainlearnError, match="text.pkl: not a pickle, or truncated"):
        read_pairs(text)
    data = pickle.dumps([("a.npy", "b.npy", 0)] * 3)
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BrainlearnError, match="cut.pkl: not a pickle, or truncated"):
        read_pairs(truncated)
    twice = tmp_path / "twice.pkl"
    twice.write_bytes(data + data)
    with pytest.raises(BrainlearnError, match="more data after the pickled list ends"):
        read_pairs(twice)


def test_large_files_are_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write_pickle(tmp_path / "big.pkl", [("a.npy", 0)] * 1000)
    monkeypatch.setattr(pairs, "MAX_BYTES", 1024)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read a file over the size limit"))
    with pytest.raises(BrainlearnError, match="big.pkl: .* MB, more than the 0 MB brainlearn reads"):
        read_pairs(path)
    assert pairs.MAX_BYTES == 1024 and os.path.getsize(path) > 1024


def test_conflicting_files_or_labels_for_one_participant(tmp_path: Path):
    items = [("/a/0_141_S_0810.npy", 0), ("/b/0_141_S_0810.npy", 0)]
    with pytest.raises(BrainlearnError, match=r"element \[1\].*participant 141_S_0810 gets t1 /b/0_141_S_0810.npy"):
        read_pairs(write_pickle(tmp_path / "two.pkl", items))
    items = [("/a/141_S_0810.npy", 0), ("/a/141_S_0810.npy", 1)]
    with pytest.raises(BrainlearnError, match="gets diagnosis AD, but an earlier element gave CN"):
        read_pairs(write_pickle(tmp_path / "labels.pkl", items))


def test_missing_file_and_bad_split(tmp_path: Path):
    with pytest.raises(BrainlearnError, match="nope.pkl: file not found"):
        read_pairs(tmp_path / "nope.pkl")
    with pytest.raises(
        BrainlearnError, match="split must be one of train, val, test, external or None, not 'training'"
    ):
        read_pairs(tmp_path / "nope.pkl", split="training")
