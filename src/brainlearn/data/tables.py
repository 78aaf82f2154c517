"""The participants table: one row per (participant, session), with image paths and clinical variables.

A table is a TSV (or CSV) file with a header line. ``participant_id`` and at least one image column are
required; the other columns of :data:`TABLE_COLUMNS` are optional and extra columns are kept as text. Image
paths are relative to the table's folder (absolute paths work too). An empty cell, or ``n/a`` (BIDS's word for
it), means "unknown".

Every problem in a table is collected into one :class:`BrainlearnError`, one line per cell, so that a table
can be fixed in one pass. Rows are counted as data rows from 1: "row 4" is the fourth line below the header,
which is line 5 of the file.
"""

from __future__ import annotations

import csv
import difflib
import logging
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainlearn.atomic import write_text
from brainlearn.errors import BrainlearnError

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("t1", "t2", "flair", "pet", "mask")
TABLE_COLUMNS = ("participant_id", "session_id", *IMAGE_COLUMNS, "diagnosis", "age", "sex", "site", "split")
DIAGNOSES = ("CN", "MCI", "AD")
SPLITS = ("train", "val", "test", "external")  # external: a held-out site or cohort, never re-split
SEXES = ("M", "F")
DEFAULT_SESSION = "ses-01"
MAX_PROBLEMS_SHOWN = 20

_SEPARATORS = {".tsv": "\t", ".csv": ","}
_SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon"}
_ON_MISSING = ("error", "skip")
# Names people use for brainlearn's columns, only for "did you mean" hints (a table has one name for each).
_COLUMN_HINTS = {
    "subject_id": "participant_id",
    "subject": "participant_id",
    "participant": "participant_id",
    "session": "session_id",
    "t1w": "t1",
    "mri": "t1",
    "t2w": "t2",
    "dx": "diagnosis",
    "group": "diagnosis",
    "label": "diagnosis",
    "gender": "sex",
}


def read_table(
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = DIAGNOSES,
    check_files: bool = True,
    on_missing: str = "error",
) -> pd.DataFrame:
    """Read and check a participants table.

    Args:
        path: a ``.tsv`` or ``.csv`` file; for other suffixes the separator (tab, comma, ;) is sniffed.
        labels: the allowed diagnosis labels; ``None`` accepts any text.
        check_files: check that every image file exists.
        on_missing: ``"error"`` reports missing image files with the other problems; ``"skip"`` drops the rows
            whose image files are missing (or that have no image path), with one logged warning each. Other
            problems still raise.

    Returns:
        One row per (participant, session): the columns of :data:`TABLE_COLUMNS` in that order, then the extra
        columns. Image paths are absolute path strings, text cells ``str`` or ``None``, ``age`` a float (NaN
        when unknown), ``session_id`` ``"ses-01"`` where the table has none.

    Raises:
        BrainlearnError: if the file cannot be read, a required column is missing, or any cell is wrong. One
            message lists every problem (the first 20), each as ``participants.tsv row 4 (participant_id
            sub-03), column t1: file not found: /abs/sub-03_T1w.nii.gz``, where row 4 is the fourth data row
            (line 5 of the file, below the header).
    """
    path = Path(path)
    _check_on_missing(on_missing)
    cells = read_cells(path)
    _check_columns(path, list(cells.columns))
    folder = path.parent.absolute()
    for column in IMAGE_COLUMNS:
        if column in cells.columns:
            cells[column] = pd.Series([_absolute(folder, cell) for cell in cells[column]], dtype=object)
    return validate_table(cells, source=str(path), labels=labels, check_files=check_files, on_missing=on_missing)


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` as TSV, atomically, so that :func:`read_table` reads back the same table.

    All columns of :data:`TABLE_COLUMNS` come first in that order (absent ones as empty cells), then the extra
    columns. Image paths that lie under the output file's folder are written relative to it, others absolute
    (relative paths in ``table`` are taken relative to the working directory). None and NaN become empty
    cells.

    Raises:
        BrainlearnError: if ``path`` does not end in ``.tsv``, the table has no ``participant_id`` column, or
            a cell holds a tab or a line break (which TSV cannot store).
    """
    path = Path(path)
    if path.suffix.lower() != ".tsv":
        raise BrainlearnError(f"{path}: write_table writes tab-separated values; name the file .tsv.")
    if "participant_id" not in table.columns:
        raise BrainlearnError(
            f"{path}: the table to write has no participant_id column (columns: {', '.join(map(str, table.columns))})."
        )
    folder = path.parent.absolute()
    columns = [*TABLE_COLUMNS, *(column for column in table.columns if column not in TABLE_COLUMNS)]
    lines = ["\t".join(map(str, columns))]
    for row, record in enumerate(table.to_dict("records")):
        where = f"{path}: row {row + 1} (participant_id {record['participant_id']})"
        lines.append("\t".join(_cell_text(where, column, record.get(column), folder) for column in columns))
    write_text(path, "\n".join(lines) + "\n")
    return path


def read_cells(path: Path) -> pd.DataFrame:
    """The text cells of a TSV or CSV file under its header: stripped strings, ``""`` for an empty cell.

    Raises:
        BrainlearnError: if the file is missing, empty, ragged (a row with more or fewer cells than the header) or
            not UTF-8, or its header repeats a name.
    """
    if not path.is_file():
        problem = "is a folder, expected a TSV or CSV file" if path.is_dir() else "file not found"
        raise BrainlearnError(f"{path}: {problem}. Pass the participants table (.tsv or .csv).")
    separator = _separator(path)
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL  # TSV (and BIDS) never quotes
    try:
        cells = pd.read_csv(
            path,
            sep=separator,
            header=None,
            dtype=str,
            na_filter=False,
            quoting=quoting,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError as error:
        raise BrainlearnError(
            f"{path}: the file is empty; expected a header line such as 'participant_id  t1'."
        ) from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        kind = _SEPARATOR_NAMES[separator]
        raise BrainlearnError(
            f"{path}: not readable as {kind}-separated UTF-8 text ({str(error).strip()}). Check that no line "
            "has more cells than the header."
        ) from error
    header = [str(name).strip() for name in cells.iloc[0]]
    _check_header(path, header)
    _check_row_lengths(path, separator, quoting, len(header))
    cells = cells.iloc[1:].fillna("").astype(object).map(str.strip).reset_index(drop=True)
    cells.columns = header
    return cells


def validate_table(
    cells: pd.DataFrame,
    *,
    source: str,
    labels: Sequence[str] | None = DIAGNOSES,
    check_files: bool = True,
    on_missing: str = "error",
    row_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Check and type a table of text cells: the one validation behind every reader of participants.

    Args:
        cells: some of the columns of :data:`TABLE_COLUMNS` plus extras; cells are text, None or NaN; image
            paths are absolute.
        source: the file or folder the cells came from, first in the error message.
        labels: the allowed diagnosis labels; ``None`` accepts any text.
        check_files: check that every image file exists.
        on_missing: as for :func:`read_table`.
        row_names: how each row is named in messages; by default ``<file name> row N (participant_id X)`` with
            N the 1-based data row.

    Returns:
        The table as :func:`read_table` returns it.

    Raises:
        BrainlearnError: listing every problem found, see :func:`read_table`.
    """
    _check_on_missing(on_missing)
    if isinstance(labels, str):
        raise BrainlearnError(f"labels must be a sequence of names such as ('CN', 'AD'), not the text {labels!r}.")
    table = _normalized(cells)
    numbered = row_names is None
    if numbered:
        name = Path(source).name
        row_names = [
            f"{name} row {i + 1} (participant_id {pid or 'empty'})" for i, pid in enumerate(table["participant_id"])
        ]
    problems = _cell_problems(table, labels) + _duplicate_problems(table)
    missing = _image_problems(table, check_files)
    if on_missing == "error":
        problems += missing
    if problems:
        raise BrainlearnError(_report(source, problems, row_names, numbered))
    skipped = sorted({problem[0] for problem in missing})
    for row in skipped:
        reasons = "; ".join(f"column {column}: {message}" for r, column, message in missing if r == row)
        logger.warning("%s: skipped (%s).", row_names[row], reasons)
    table["age"] = pd.Series([_number(age) for age in table["age"]], dtype=float)
    return table.drop(index=skipped).reset_index(drop=True)


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in _ON_MISSING:
        raise BrainlearnError(f"on_missing must be 'error' or 'skip', not {on_missing!r}.")


def _separator(path: Path) -> str:
    if path.suffix.lower() in _SEPARATORS:
        return _SEPARATORS[path.suffix.lower()]
    with open(path, encoding="utf-8-sig", errors="replace") as file:
        header = file.readline()
    try:
        return csv.Sniffer().sniff(header, delimiters="\t,;").delimiter
    except csv.Error:  # a single column: any separator reads it
        return "\t"


def _check_row_lengths(path: Path, separator: str, quoting: int, width: int) -> None:
    """Refuse rows with fewer cells than the header: pandas pads them with empty cells, so a file cut short in
    its last row (an interrupted copy) would read with its last values silently unknown."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            rows = [row for row in csv.reader(file, delimiter=separator, quoting=quoting) if _holds_text(row)]
    except csv.Error:  # a cell over the csv module's size limit: pandas has read it, leave the rows unchecked
        return
    short = [k for k, row in enumerate(rows[1:], start=1) if len(row) < width]
    if short:
        rows_text = ", ".join(map(str, short[:5])) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
        raise BrainlearnError(
            f"{path}: row(s) {rows_text} have fewer cells than the header's {width} (rows are data rows counted "
            "from 1 below the header). Give every row a cell for every column, empty when unknown; a row cut short "
            "can also mean the file was truncated."
        )


def _holds_text(row: list[str]) -> bool:
    """Whether pandas reads ``row`` as a row: it skips lines that are empty or only spaces."""
    return len(row) > 1 or (len(row) == 1 and bool(row[0].strip()))


def _check_header(path: Path, header: list[str]) -> None:
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BrainlearnError(f"{path}: the header names column(s) {', '.join(repeated)} more than once; keep one.")
    if "" in header:
        raise BrainlearnError(
            f"{path}: header cell {header.index('') + 1} is empty; name every column or remove the extra separator."
        )


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [] if "participant_id" in columns else ["participant_id"]
    if not any(column in columns for column in IMAGE_COLUMNS):
        missing.append(f"an image column ({', '.join(IMAGE_COLUMNS)})")
    hints = {column: _known_column(column) for column in columns if column not in TABLE_COLUMNS}
    hints = {column: known for column, known in hints.items() if known and known not in columns}
    if not missing:
        for column, known in hints.items():
            logger.warning(
                "%s: column '%s' is kept as an extra column; rename it to '%s' to use it.",
                path,
                column,
                known,
            )
        return
    message = f"{path}: missing required column(s): {' and '.join(missing)}. Found: {', '.join(columns)}."
    if len(columns) == 1 and "," in columns[0]:
        message += " The header looks comma-separated: name the file .csv or separate the cells with tabs."
    elif hints:
        message += " Did you mean " + ", ".join(f"'{known}' for '{col}'" for col, known in hints.items()) + "?"
    raise BrainlearnError(message + f" Expected columns: {', '.join(TABLE_COLUMNS)}.")


def _known_column(name: str) -> str | None:
    lower = name.strip().lower()
    if lower in TABLE_COLUMNS or lower in _COLUMN_HINTS:
        return _COLUMN_HINTS.get(lower, lower)
    close = difflib.get_close_matches(lower, TABLE_COLUMNS, n=1, cutoff=0.8)
    return close[0] if close else None


def _text(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return None if text in ("", "n/a") else text


def _absolute(folder: Path, cell: object) -> str | None:
    text = _text(cell)
    return None if text is None else os.path.normpath(os.path.join(folder, text))


def _normalized(cells: pd.DataFrame) -> pd.DataFrame:
    empty = [None] * len(cells)
    columns = [*TABLE_COLUMNS, *(column for column in cells.columns if column not in TABLE_COLUMNS)]
    data = {column: [_text(v) for v in cells[column]] if column in cells.columns else empty for column in columns}
    data["session_id"] = [session or DEFAULT_SESSION for session in data["session_id"]]
    return pd.DataFrame({column: pd.Series(values, dtype=object) for column, values in data.items()})


def _cell_problems(table: pd.DataFrame, labels: Sequence[str] | None) -> list[tuple[int, str, str]]:
    checks = {
        "participant_id": lambda v: "empty; every row needs a participant_id" if v is None else None,
        "diagnosis": lambda v: _diagnosis_problem(v, labels),
        "age": _age_problem,
        "sex": lambda v: _choice_problem("sex", v, SEXES, {"male": "M", "female": "F", "m": "M", "f": "F"}),
        "split": lambda v: _choice_problem("split", v, SPLITS, {"training": "train", "validation": "val"}),
    }
    problems = []
    for row, record in enumerate(table[list(checks)].to_dict("records")):
        for column, check in checks.items():
            message = check(record[column])
            if message:
                problems.append((row, column, message))
    return problems


def _diagnosis_problem(value: str | None, labels: Sequence[str] | None) -> str | None:
    if value is None or labels is None or value in labels:
        return None
    hint = ""
    if value.upper() in ("NC", "HC") and "CN" in labels:
        hint = " (normal controls are called 'CN' here)"
    elif value.upper() in (label.upper() for label in labels):
        hint = f" (labels are case-sensitive: write '{next(x for x in labels if x.upper() == value.upper())}')"
    return f"unknown diagnosis '{value}'{hint}; allowed: {', '.join(labels)}. Leave the cell empty if unknown"


def _age_problem(value: str | None) -> str | None:
    if value is None:
        return None
    age = _number(value)
    if math.isnan(age):
        return f"age '{value}' is not a number; write years as a number (e.g. 72.5) or leave the cell empty"
    if not 0 <= age <= 130:
        return f"age {value} is outside 0-130 years; write the age in years at this session"
    return None


def _choice_problem(column: str, value: str | None, allowed: tuple[str, ...], hints: dict[str, str]) -> str | None:
    if value is None or value in allowed:
        return None
    suggestion = hints.get(value.lower()) or next((a for a in allowed if a.lower() == value.lower()), None)
    hint = f" (write '{suggestion}')" if suggestion else ""
    return f"{column} '{value}' is not one of {', '.join(allowed)}{hint}. Leave the cell empty if unknown"


def _number(value: object) -> float:
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _duplicate_problems(table: pd.DataFrame) -> list[tuple[int, str, str]]:
    first: dict[tuple[str, str], int] = {}
    problems = []
    for row, key in enumerate(zip(table["participant_id"], table["session_id"], strict=True)):
        if key[0] is not None and key in first:
            message = (
                f"participant {key[0]} session {key[1]} is already in row {first[key] + 1}; give each "
                "session its own session_id or remove the repeated row"
            )
            problems.append((row, "session_id", message))
        first.setdefault(key, row)
    return problems


def _image_problems(table: pd.DataFrame, check_files: bool) -> list[tuple[int, str, str]]:
    problems = []
    for row, record in enumerate(table[list(IMAGE_COLUMNS)].to_dict("records")):
        paths = {column: path for column, path in record.items() if path is not None}
        if not paths:
            problems.append((row, "t1", f"no image: every row needs a path in one of {', '.join(IMAGE_COLUMNS)}"))
        for column, path in paths.items():
            if check_files and not os.path.isfile(path):
                problem = "is a folder, expected an image file" if os.path.isdir(path) else "file not found"
                problems.append((row, column, f"{problem}: {path}"))
    return problems


def _report(source: str, problems: list, row_names: Sequence[str], numbered: bool) -> str:
    order = {column: i for i, column in enumerate(TABLE_COLUMNS)}
    problems = sorted(problems, key=lambda problem: (problem[0], order.get(problem[1], len(order))))
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    note = " (rows are data rows counted from 1 below the header)" if numbered else ""
    lines = [f"{source}: {count}{note}:"]
    lines += [f"{row_names[row]}, column {column}: {message}" for row, column, message in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return "\n".join([*lines, "Fix these cells and read the table again."])


def _cell_text(where: str, column: str, value: object, folder: Path) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        text = str(int(value)) if value.is_integer() else repr(value)  # 72.0 -> "72"; repr round-trips the rest
    else:
        text = str(value)
    if column in IMAGE_COLUMNS:
        absolute = Path(os.path.abspath(text))
        text = absolute.relative_to(folder).as_posix() if absolute.is_relative_to(folder) else str(absolute)
    if any(char in text for char in "\t\n\r"):
        raise BrainlearnError(
            f"{where}, column {column}: holds a tab or line break, which TSV cannot store; remove it."
        )
    return text
