from collections import Counter

import numpy as np
import pandas as pd
import pytest

from brainlearn.data.splits import assign_folds, assign_splits, check_no_leakage
from brainlearn.errors import BrainlearnError, DataLeakageError


def random_table(seed: int, participants: int = 40) -> pd.DataFrame:
    """Participants with 1-3 sessions each, one diagnosis (or none) per participant, rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(participants):
        diagnosis = rng.choice(["CN", "MCI", "AD", None])
        for session in range(rng.integers(1, 4)):
            rows.append(
                {
                    "participant_id": f"sub-{i:03d}",
                    "session_id": f"ses-{session + 1:02d}",
                    "diagnosis": diagnosis,
                }
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def table_of(counts: dict[str, int], sessions: int = 1) -> pd.DataFrame:
    rows = []
    for diagnosis, count in counts.items():
        for i in range(count):
            for session in range(sessions):
                rows.append(
                    {
                        "participant_id": f"{diagnosis}-{i:03d}",
                        "session_id": f"ses-{session}",
                        "diagnosis": diagnosis,
                    }
                )
    return pd.DataFrame(rows)


def splits_by_participant(table: pd.DataFrame, column: str = "split") -> dict:
    return table.groupby("participant_id")[column].agg(lambda values: set(values)).to_dict()


@pytest.mark.parametrize("seed", range(50))
def test_no_participant_in_two_splits(seed: int):
    table = random_table(seed)
    result = assign_splits(table, seed=seed)
    assert result["split"].isin(["train", "val", "test"]).all()
    assert all(len(splits) == 1 for splits in splits_by_participant(result).values())
    folds = assign_folds(table, k=4, seed=seed)
    assert all(len(found) == 1 for found in splits_by_participant(folds, "fold").values())


def test_stratified_proportions_per_diagnosis():
    result = assign_splits(table_of({"CN": 100, "AD": 60, "MCI": 7}, sessions=2), val=0.15, test=0.15)
    per_participant = result.drop_duplicates("participant_id")
    counts = Counter(zip(per_participant["diagnosis"], per_participant["split"], strict=True))
    assert (counts["CN", "train"], counts["CN", "val"], counts["CN", "test"]) == (70, 15, 15)
    assert (counts["AD", "train"], counts["AD", "val"], counts["AD", "test"]) == (42, 9, 9)
    assert counts["MCI", "train"] == 5 and counts["MCI", "val"] + counts["MCI", "test"] == 2


def test_deterministic_per_seed_and_independent_of_row_order():
    table = random_table(0)
    first = splits_by_participant(assign_splits(table, seed=3))
    assert splits_by_participant(assign_splits(table, seed=3)) == first
    shuffled = table.sample(frac=1.0, random_state=1)
    assert splits_by_participant(assign_splits(shuffled, seed=3)) == first
    assert any(splits_by_participant(assign_splits(table, seed=seed)) != first for seed in range(4, 8))


def test_returns_a_copy_and_keeps_the_index():
    table = random_table(1)
    table.index = table.index + 100
    result = assign_splits(table)
    assert "split" not in table.columns and result.index.equals(table.index)


def test_very_small_strata_still_train():
    result = assign_splits(table_of({"CN": 1, "AD": 2}))
    assert result["split"].tolist() == ["train", "train", "train"]


def test_no_stratification_and_missing_values_form_a_stratum():
    table = pd.DataFrame({"participant_id": [f"s{i}" for i in range(20)], "diagnosis": [None] * 10 + ["AD"] * 10})
    per_stratum = assign_splits(table, val=0.2, test=0.2).groupby(table["diagnosis"].isna())["split"].value_counts()
    assert per_stratum[True].to_dict() == per_stratum[False].to_dict() == {"train": 6, "val": 2, "test": 2}
    assert assign_splits(table, val=0.2, test=0.2, stratify=None)["split"].value_counts().to_dict() == {
        "train": 12,
        "val": 4,
        "test": 4,
    }


@pytest.mark.parametrize(
    ("val", "test", "expected"),
    [
        (-0.1, 0.1, r"val must be a fraction in \[0, 1\), not -0.1"),
        (0.1, 1.0, r"test must be a fraction in \[0, 1\), not 1.0"),
        (0.5, 0.5, "val \\+ test must be below 1"),
    ],
)
def test_bad_fractions(val: float, test: float, expected: str):
    with pytest.raises(BrainlearnError, match=expected):
        assign_splits(random_table(0), val=val, test=test)


def test_participant_with_different_strata_is_refused():
    table = pd.DataFrame({"participant_id": ["a", "a", "b"], "diagnosis": ["MCI", "AD", "CN"]})
    with pytest.raises(BrainlearnError, match=r"1 participant\(s\) have sessions with different diagnosis values: a"):
        assign_splits(table)
    with pytest.raises(BrainlearnError, match="no site column"):
        assign_splits(table, stratify="site")


def test_folds_cover_every_participant_once_and_balance_strata():
    table = table_of({"CN": 23, "AD": 11}, sessions=2)
    result = assign_folds(table, k=5, seed=2)
    assert result["fold"].dtype == np.int64 and set(result["fold"]) == set(range(5))
    per_participant = result.drop_duplicates("participant_id")
    assert len(per_participant) == 34
    sizes = per_participant["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1
    for _, stratum in per_participant.groupby("diagnosis"):
        assert stratum["fold"].value_counts().reindex(range(5), fill_value=0).agg(np.ptp) <= 1
    assert assign_folds(table, k=5, seed=2)["fold"].tolist() == result["fold"].tolist()


@pytest.mark.parametrize("k", [1, 35, True, 2.5])
def test_bad_k(k):
    with pytest.raises(BrainlearnError, match=r"k must be an integer from 2 to the number of participants \(34\)"):
        assign_folds(table_of({"CN": 23, "AD": 11}), k=k)


def test_check_no_leakage_names_the_participants():
    table = pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-01", "sub-02", "sub-03", "sub-03", "sub-04"],
            "split": ["test", "train", "val", "val", "train", None],
        }
    )
    with pytest.raises(DataLeakageError) as error:
        check_no_leakage(table)
    message = str(error.value)
    assert message.startswith("2 participant(s) in more than one split: sub-01 (train, test); sub-03 (train, val)")
    assert "sub-02" not in message and "Rebuild the splits with `brainlearn split`" in message
    check_no_leakage(pd.DataFrame({"participant_id": ["a", "a", "b"], "split": [None, "val", "val"]}))


def test_check_no_leakage_lists_ten_and_counts_the_rest():
    table = pd.DataFrame({"participant_id": [f"p{i:02d}" for i in range(12)] * 2, "fold": [0] * 12 + [1] * 12})
    with pytest.raises(
        DataLeakageError,
        match=r"12 participant\(s\) in more than one fold: p00 \(0, 1\).*p09 \(0, 1\) and 2 more",
    ):
        check_no_leakage(table, column="fold")
    with pytest.raises(BrainlearnError, match="the table has no split column"):
        check_no_leakage(table)


def test_external_participants_keep_their_split():
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(12)],
            "diagnosis": ["CN", "AD"] * 6,
            "split": ["external"] * 3 + [None] * 9,
        }
    )
    result = assign_splits(table, val=0.2, test=0.2, seed=3)
    assert result["split"][:3].tolist() == ["external"] * 3
    assert set(result["split"][3:]) <= {"train", "val", "test"}


def test_stratifying_by_diagnosis_and_age_matches_the_splits_ages():
    from brainlearn.data.splits import stratum_column

    rng = np.random.default_rng(0)
    n = 300
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(n)],
            "diagnosis": rng.choice(["CN", "AD"], n),
            "age": rng.uniform(55, 90, n).round(1),
        }
    )
    strata = stratum_column(table, ["diagnosis", "age"], bins=3)
    assert set(strata) == {f"{d}|age:{k}/3" for d in ("CN", "AD") for k in (1, 2, 3)}
    young = table["age"] <= table["age"].quantile(1 / 3)
    assert (strata[young].str.endswith("age:1/3")).all()
    split = assign_splits(table.assign(stratum=strata), stratify="stratum", seed=1)
    ages = split.groupby(["split", "diagnosis"])["age"].mean()
    for diagnosis in ("CN", "AD"):  # within each diagnosis, val and test ages stay close to train's
        assert abs(ages["val", diagnosis] - ages["train", diagnosis]) < 3.5
        assert abs(ages["test", diagnosis] - ages["train", diagnosis]) < 3.5


def test_stratum_column_reports_a_missing_column():
    from brainlearn.data.splits import stratum_column

    table = pd.DataFrame({"participant_id": ["a"], "diagnosis": ["CN"]})
    with pytest.raises(BrainlearnError, match="age"):
        stratum_column(table, ["diagnosis", "age"])
