"""Subject-level splits and folds: every session of a participant goes to the same split (or fold).

Splitting by image or slice instead of by participant puts one person's anatomy on both sides and inflates
every metric (slice-level splits reach about 96 % accuracy on random labels, see document 001).
:func:`check_no_leakage` guards against it, and both assigners call it on what they produce.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable

import numpy as np
import pandas as pd

from brainlearn.data.tables import SPLITS
from brainlearn.errors import BrainlearnError, DataLeakageError

ASSIGNED = ("train", "val", "test")  # what assign_splits hands out; "external" rows keep their split
MAX_LEAKS_SHOWN = 10
_MISSING = object()  # the stratum of participants without a value


def assign_splits(
    table: pd.DataFrame,
    *,
    val: float = 0.15,
    test: float = 0.15,
    stratify: str | None = "diagnosis",
    seed: int = 0,
) -> pd.DataFrame:
    """Assign each participant to train, val or test, stratified, and return a copy with the ``split`` column.

    Participants whose split is already ``external`` (a held-out site or cohort) keep it. The others (not rows:
    participants) are shuffled with ``numpy.random.default_rng(seed)`` within each stratum and
    allocated so that each split's share of the stratum is as close as possible to its fraction (largest
    remainder rounding, ties broken at random; a stratum of one or two participants still gives train one).
    The result depends only on the participants, their strata and ``seed``, not on the row order.

    Args:
        table: a participants table with ``participant_id`` (and the ``stratify`` column).
        val: fraction of each stratum for validation, in [0, 1).
        test: fraction of each stratum for testing, in [0, 1); ``val + test`` must be below 1.
        stratify: the column whose value defines a participant's stratum; None for no stratification.
            Participants without a value form a stratum of their own.
        seed: the random seed.

    Raises:
        BrainlearnError: for fractions out of range, a missing column, or a participant whose sessions have
            different values of ``stratify``.
    """
    _check_fractions(val, test)
    rng = np.random.default_rng(seed)
    split_of: dict[Hashable, str] = {}
    external = table["split"].eq("external") if "split" in table else pd.Series(False, index=table.index)
    split_of.update(dict.fromkeys(table.loc[external, "participant_id"], "external"))
    for participants in _strata(table[~external], stratify).values():
        shuffled = [participants[i] for i in rng.permutation(len(participants))]
        counts = _allocate(len(shuffled), (1.0 - val - test, val, test), rng)
        names = [name for name, count in zip(ASSIGNED, counts, strict=True) for _ in range(count)]
        split_of.update(zip(shuffled, names, strict=True))
    result = table.copy()
    result["split"] = pd.Series([split_of[p] for p in result["participant_id"]], index=result.index, dtype=object)
    check_no_leakage(result)
    return result


def assign_folds(table: pd.DataFrame, *, k: int = 5, stratify: str | None = "diagnosis", seed: int = 0) -> pd.DataFrame:
    """Assign each participant to one of ``k`` folds, stratified; return a copy with an int ``fold`` column.

    Participants are shuffled within each stratum (as in :func:`assign_splits`), the strata are laid end to
    end and dealt out to folds 0, 1, ..., k-1, 0, 1, ... so that fold sizes, overall and per stratum, differ
    by at most one.

    Raises:
        BrainlearnError: if ``k`` is not an integer from 2 to the number of participants, or for the problems
            listed in :func:`assign_splits`.
    """
    strata = _strata(table, stratify)
    count = sum(len(participants) for participants in strata.values())
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= count:
        raise BrainlearnError(f"k must be an integer from 2 to the number of participants ({count}), not {k!r}.")
    rng = np.random.default_rng(seed)
    order = [participants[i] for participants in strata.values() for i in rng.permutation(len(participants))]
    fold_of = {participant: i % k for i, participant in enumerate(order)}
    result = table.copy()
    result["fold"] = pd.Series([fold_of[p] for p in result["participant_id"]], index=result.index, dtype="int64")
    check_no_leakage(result, column="fold")
    return result


def check_no_leakage(table: pd.DataFrame, column: str = "split") -> None:
    """Raise if any participant has rows in more than one split (or fold); rows without a value are ignored.

    Raises:
        DataLeakageError: naming (up to 10 of) the participants and the splits each is in.
        BrainlearnError: if ``participant_id`` or ``column`` is not in the table.
    """
    _check_columns(table, ("participant_id", column))
    seen: dict[Hashable, list] = {}
    for participant, value in zip(table["participant_id"], table[column], strict=True):
        values = seen.setdefault(participant, [])
        if not _is_missing(value) and value not in values:
            values.append(value)
    leaked = {participant: values for participant, values in seen.items() if len(values) > 1}
    if not leaked:
        return
    order = {name: i for i, name in enumerate(SPLITS)}
    shown = []
    for participant, values in list(leaked.items())[:MAX_LEAKS_SHOWN]:
        values = sorted(values, key=lambda v: (order.get(v, len(order)), str(v)))  # train, val, test first
        shown.append(f"{participant} ({', '.join(map(str, values))})")
    more = f" and {len(leaked) - MAX_LEAKS_SHOWN} more" if len(leaked) > MAX_LEAKS_SHOWN else ""
    raise DataLeakageError(
        f"{len(leaked)} participant(s) in more than one {column}: {'; '.join(shown)}{more}. All sessions of "
        f"a participant must share one {column}, or the model is evaluated on people it was trained on. "
        "Rebuild the splits with `brainlearn split`."
    )


def _check_fractions(val: float, test: float) -> None:
    for name, fraction in (("val", val), ("test", test)):
        if not isinstance(fraction, numbers.Real) or not 0 <= fraction < 1:
            raise BrainlearnError(f"{name} must be a fraction in [0, 1), not {fraction!r}.")
    if val + test >= 1:
        raise BrainlearnError(f"val + test must be below 1 so that some participants train, not {val} + {test}.")


def _check_columns(table: pd.DataFrame, columns: tuple[str, ...]) -> None:
    for column in columns:
        if column not in table.columns:
            found = ", ".join(map(str, table.columns))
            raise BrainlearnError(f"the table has no {column} column (columns: {found}).")


def _is_missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def stratum_column(table: pd.DataFrame, columns, *, bins: int = 3) -> pd.Series:
    """One stratum label per row from several columns; numeric columns (age) are cut into ``bins`` quantile bins.

    Stratifying splits by diagnosis *and* age keeps every split's age distribution alike within each diagnosis, so
    that validation cannot reward a model for telling old from young (age moves the same structures as AD).
    Bins are computed over participants (one value each), labelled ``age:1/3`` … ; a missing value is its own bin.

    Raises:
        BrainlearnError: a column is missing, or ``bins`` is not an integer >= 1.
    """
    columns = [columns] if isinstance(columns, str) else list(columns)
    _check_columns(table, ("participant_id", *columns))
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise BrainlearnError(f"age bins must be an integer >= 1, not {bins!r}.")
    parts = []
    for column in columns:
        values = table[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            per_participant = values.groupby(table["participant_id"]).first()
            edges = np.unique(np.nanquantile(per_participant, np.linspace(0, 1, bins + 1)))
            codes = np.digitize(values, edges[1:-1], right=True) + 1
            labels = [f"{column}:{c}/{bins}" for c in codes]
            parts.append(pd.Series(np.where(values.isna(), f"{column}:missing", labels), index=table.index))
        else:
            parts.append(values.astype(object).where(values.notna(), f"{column}:missing").astype(str))
    combined = parts[0]
    for part in parts[1:]:
        combined = combined + "|" + part
    return combined


def _strata(table: pd.DataFrame, stratify: str | None) -> dict[Hashable, list]:
    """Stratum value -> its participants in sorted order; strata sorted, the missing stratum last."""
    _check_columns(table, ("participant_id",) if stratify is None else ("participant_id", stratify))
    if any(_is_missing(participant) for participant in table["participant_id"]):
        raise BrainlearnError("the table has rows without a participant_id; every row needs one.")
    values = table[stratify] if stratify is not None else [None] * len(table)
    stratum_values: dict[Hashable, set] = {}
    for participant, value in zip(table["participant_id"], values, strict=True):
        stratum_values.setdefault(participant, set()).update(() if _is_missing(value) else (value,))
    mixed = {participant: found for participant, found in stratum_values.items() if len(found) > 1}
    if mixed:
        shown = "; ".join(f"{p} ({', '.join(sorted(map(str, v)))})" for p, v in list(mixed.items())[:MAX_LEAKS_SHOWN])
        raise BrainlearnError(
            f"{len(mixed)} participant(s) have sessions with different {stratify} values: {shown}. A "
            f"participant needs one stratum: stratify by a per-participant column (e.g. the baseline "
            f"{stratify}) or pass stratify=None."
        )
    strata: dict[Hashable, list] = {}
    for participant in sorted(stratum_values, key=str):
        found = stratum_values[participant]
        strata.setdefault(next(iter(found)) if found else _MISSING, []).append(participant)
    return dict(sorted(strata.items(), key=lambda item: (item[0] is _MISSING, str(item[0]))))


def _allocate(count: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[int]:
    """Largest-remainder rounding of ``count * fractions`` to integers summing to ``count``; train gets 1."""
    ideal = [count * fraction for fraction in fractions]
    counts = [math.floor(x + 1e-9) for x in ideal]  # 1e-9: 10 * 0.7 is 6.9999999... in floating point
    tie_breaks = rng.random(len(fractions))
    by_remainder = sorted(range(len(fractions)), key=lambda i: (-round(ideal[i] - counts[i], 9), tie_breaks[i]))
    for i in by_remainder[: count - sum(counts)]:
        counts[i] += 1
    if count and counts[0] == 0:
        donor = 1 if counts[1] > counts[2] or (counts[1] == counts[2] and tie_breaks[1] < tie_breaks[2]) else 2
        counts[donor] -= 1
        counts[0] += 1
    return counts
