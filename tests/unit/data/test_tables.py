import logging
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.data.tables import IMAGE_COLUMNS, TABLE_COLUMNS, read_table, write_table
from brainlearn.errors import BrainlearnError


def write_nifti(path: Path) -> Path:
    """A tiny non-cubic random volume, enough for existence checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(row) for row in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in ("sub-01_T1w.nii.gz", "sub-01_pet.nii.gz", "sub-02_T1w.nii.gz", "sub-03_T1w.nii.gz"):
        write_nifti(tmp_path / "images" / name)
    return tmp_path


def test_reads_columns_in_order_with_absolute_paths_and_typed_cells(images: Path):
    path = write_tsv(
        images / "participants.tsv",
        [
            ["participant_id", "t1", "pet", "diagnosis", "age", "sex", "scanner"],
            ["sub-01", "images/sub-01_T1w.nii.gz", "images/sub-01_pet.nii.gz", "CN", "71.5", "F", "prisma"],
            ["sub-02", "images/sub-02_T1w.nii.gz", "", "AD", "n/a", "M", ""],
        ],
    )
    table = read_table(path)
    assert list(table.columns) == [*TABLE_COLUMNS, "scanner"]
    assert table["session_id"].tolist() == ["ses-01", "ses-01"]
    assert table.loc[0, "t1"] == str(images / "images" / "sub-01_T1w.nii.gz")
    assert Path(table.loc[0, "pet"]).is_absolute()
    assert table.loc[1, "pet"] is None and table.loc[1, "t2"] is None and table.loc[1, "scanner"] is None
    assert table.loc[0, "age"] == 71.5 and math.isnan(table.loc[1, "age"])
    assert table["age"].dtype == np.float64


def test_empty_session_cells_become_ses_01(images: Path):
    path = write_tsv(
        images / "p.tsv",
        [
            ["participant_id", "session_id", "t1"],
            ["sub-01", "", "images/sub-01_T1w.nii.gz"],
            ["sub-01", "ses-02", "images/sub-01_T1w.nii.gz"],
        ],
    )
    assert read_table(path)["session_id"].tolist() == ["ses-01", "ses-02"]


@pytest.mark.parametrize(("name", "text"), [("p.csv", "participant_id,t1\n{}\n"), ("p.txt", "participant_id;t1\n{}\n")])
def test_reads_csv_and_sniffs_other_suffixes(images: Path, name: str, text: str):
    separator = "," if name.endswith(".csv") else ";"
    path = images / name
    path.write_text(text.format(f"sub-01{separator}images/sub-01_T1w.nii.gz"))
    assert read_table(path)["participant_id"].tolist() == ["sub-01"]


def test_missing_required_columns_suggests_names(tmp_path: Path):
    path = write_tsv(tmp_path / "participants.tsv", [["subject_id", "T1", "diagnosis"], ["sub-01", "a.nii", "CN"]])
    with pytest.raises(BrainlearnError) as error:
        read_table(path)
    message = str(error.value)
    assert "participants.tsv: missing required column(s): participant_id and an image column" in message
    assert "'participant_id' for 'subject_id'" in message and "'t1' for 'T1'" in message
    assert "Expected columns: participant_id, session_id, t1, t2, flair, pet, mask" in message


def test_comma_separated_tsv_gets_a_hint(tmp_path: Path):
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id,t1\nsub-01,a.nii\n")
    with pytest.raises(BrainlearnError, match="looks comma-separated: name the file .csv"):
        read_table(path)


def test_collects_every_problem_with_row_and_column(images: Path):
    rows = [
        ["participant_id", "session_id", "t1", "diagnosis", "age", "sex", "split"],
        ["sub-01", "ses-01", "images/sub-01_T1w.nii.gz", "CN", "70", "M", "train"],
        ["sub-02", "ses-01", "images/missing.nii.gz", "NC", "seventy", "male", "validation"],
        ["sub-02", "ses-01", "images/sub-02_T1w.nii.gz", "AD", "150", "F", "test"],
        ["", "ses-01", "images/sub-03_T1w.nii.gz", "", "", "", ""],
    ]
    with pytest.raises(BrainlearnError) as error:
        read_table(write_tsv(images / "participants.tsv", rows))
    lines = str(error.value).splitlines()
    assert lines[0].startswith(f"{images / 'participants.tsv'}: 8 problems (rows are data rows counted from 1")
    missing = images / "images" / "missing.nii.gz"
    assert f"participants.tsv row 2 (participant_id sub-02), column t1: file not found: {missing}" in lines
    expected = [
        "row 2 (participant_id sub-02), column diagnosis: unknown diagnosis 'NC' (normal controls are called",
        "row 2 (participant_id sub-02), column age: age 'seventy' is not a number",
        "row 2 (participant_id sub-02), column sex: sex 'male' is not one of M, F (write 'M')",
        "row 2 (participant_id sub-02), column split: split 'validation' is not one of train, val, test",
        "row 3 (participant_id sub-02), column session_id: participant sub-02 session ses-01 is already in",
        "row 3 (participant_id sub-02), column age: age 150 is outside 0-130 years",
        "row 4 (participant_id empty), column participant_id: empty",
    ]
    for text in expected:
        assert any(text in line for line in lines), text
    for text in ("normal controls are called 'CN' here", "allowed: CN, MCI, AD", "(write 'val')"):
        assert text in str(error.value)


def test_shows_twenty_problems_then_a_count(images: Path):
    rows = [["participant_id", "t1", "sex"]] + [[f"sub-{i:02d}", "images/sub-01_T1w.nii.gz", "x"] for i in range(25)]
    with pytest.raises(BrainlearnError) as error:
        read_table(write_tsv(images / "p.tsv", rows))
    message = str(error.value)
    assert message.count("column sex: sex 'x' is not one of M, F") == 20
    assert "... and 5 more" in message


def test_skip_drops_rows_with_missing_files_and_warns(images: Path, caplog: pytest.LogCaptureFixture):
    rows = [
        ["participant_id", "t1", "pet"],
        ["sub-01", "images/sub-01_T1w.nii.gz", "images/sub-01_pet.nii.gz"],
        ["sub-02", "images/sub-02_T1w.nii.gz", "images/gone.nii.gz"],
        ["sub-03", "", ""],
    ]
    path = write_tsv(images / "p.tsv", rows)
    with caplog.at_level(logging.WARNING, logger="brainlearn.data.tables"):
        table = read_table(path, on_missing="skip")
    assert table["participant_id"].tolist() == ["sub-01"]
    assert table.index.tolist() == [0]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "p.tsv row 2 (participant_id sub-02): skipped (column pet: file not found:" in warnings[0]
    assert "gone.nii.gz" in warnings[0] and "row 3 (participant_id sub-03): skipped" in warnings[1]


def test_skip_still_raises_other_problems(images: Path):
    rows = [["participant_id", "t1", "diagnosis"], ["sub-01", "images/gone.nii.gz", "XX"]]
    with pytest.raises(BrainlearnError, match="column diagnosis: unknown diagnosis 'XX'") as error:
        read_table(write_tsv(images / "p.tsv", rows), on_missing="skip")
    assert "file not found" not in str(error.value)


def test_labels_none_accepts_any_diagnosis_and_check_files_false_skips_existence(tmp_path: Path):
    path = write_tsv(tmp_path / "p.tsv", [["participant_id", "t1", "diagnosis"], ["sub-01", "nowhere.nii", "FTD"]])
    table = read_table(path, labels=None, check_files=False)
    assert table.loc[0, "diagnosis"] == "FTD"
    with pytest.raises(BrainlearnError, match="unknown diagnosis 'FTD'; allowed: CN, AD"):
        read_table(path, labels=("CN", "AD"), check_files=False)


def test_near_miss_extra_column_is_kept_with_a_warning(images: Path, caplog: pytest.LogCaptureFixture):
    rows = [["participant_id", "t1", "diagnosys"], ["sub-01", "images/sub-01_T1w.nii.gz", "CN"]]
    with caplog.at_level(logging.WARNING, logger="brainlearn.data.tables"):
        table = read_table(write_tsv(images / "p.tsv", rows))
    assert table.loc[0, "diagnosys"] == "CN" and table.loc[0, "diagnosis"] is None
    assert "rename it to 'diagnosis'" in caplog.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty"),
        (
            "participant_id\tt1\nsub-01\ta.nii\textra\n",
            "not readable as tab-separated UTF-8 text (Error tokenizing data",
        ),
        ("participant_id\tt1\tt1\nsub-01\ta.nii\tb.nii\n", "names column(s) t1 more than once"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "p.tsv"
    path.write_text(content)
    with pytest.raises(BrainlearnError, match=re.escape(expected)):
        read_table(path, check_files=False)


def test_missing_table_and_bad_on_missing(tmp_path: Path):
    with pytest.raises(BrainlearnError, match="nope.tsv: file not found"):
        read_table(tmp_path / "nope.tsv")
    with pytest.raises(BrainlearnError, match="on_missing must be 'error' or 'skip', not 'ignore'"):
        read_table(tmp_path / "nope.tsv", on_missing="ignore")


def test_round_trip_keeps_the_table(images: Path):
    rows = [
        ["participant_id", "session_id", "t1", "pet", "diagnosis", "age", "site", "notes"],
        ["sub-01", "ses-01", "images/sub-01_T1w.nii.gz", "images/sub-01_pet.nii.gz", "CN", "70", "a", "x y"],
        ["sub-01", "ses-02", "images/sub-01_T1w.nii.gz", "", "MCI", "71.25", "", ""],
        ["sub-02", "ses-01", "images/sub-02_T1w.nii.gz", "", "", "", "b", "z"],
    ]
    first = read_table(write_tsv(images / "participants.tsv", rows))
    copy = write_table(first, images / "out" / "copy.tsv")
    assert read_table(copy).equals(first)
    inside = write_table(first, images / "inside.tsv")
    written = inside.read_text().splitlines()
    assert written[0].split("\t") == [*TABLE_COLUMNS, "notes"]
    assert written[1].split("\t")[2] == "images/sub-01_T1w.nii.gz"  # under the folder: relative
    assert copy.read_text().splitlines()[1].split("\t")[2] == str(images / "images" / "sub-01_T1w.nii.gz")
    assert written[3].split("\t")[TABLE_COLUMNS.index("age")] == ""
    assert read_table(inside).equals(first)


def test_write_table_fills_absent_columns_and_refuses_bad_cells(tmp_path: Path):
    table = pd.DataFrame({"participant_id": ["sub-01"], "t1": [str(write_nifti(tmp_path / "a.nii.gz"))]})
    path = write_table(table, tmp_path / "t.tsv")
    assert path.read_text().splitlines() == ["\t".join(TABLE_COLUMNS), "sub-01\t\ta.nii.gz" + "\t" * 9]
    with pytest.raises(BrainlearnError, match=r"row 1 \(participant_id sub-01\), column site: holds a tab"):
        write_table(table.assign(site=["a\tb"]), tmp_path / "t.tsv")
    with pytest.raises(BrainlearnError, match="name the file .tsv"):
        write_table(table, tmp_path / "t.csv")
    assert all(column in TABLE_COLUMNS for column in IMAGE_COLUMNS)
