"""Document 000's pickled pair lists for a generated cohort: unpaired training pairs, paired evaluation pairs.

Document 000 trains its synthesis network on *unpaired* MRI and PET (each training MRI comes with the PET of
another participant) and evaluates on paired scans; external sets hold MRI only. Its lists are pickled Python
lists of ``(mri_path, pet_path, label)`` (or ``(mri_path, label)``) with NC = 0 and AD = 1, so MCI is left out.
These files hold only tuples, strings and integers, and ``brainlearn table --pairs`` reads them back safely.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from brainlearn.atomic import atomic_path

LABELS = {"CN": 0, "AD": 1}


def write_pair_lists(root: Path, table: pd.DataFrame, *, seed: int) -> dict[str, Path]:
    """Write ``root/pairs/<split>.pkl`` for each split of ``table``; training pairs get a PET of someone else."""
    rng = np.random.default_rng([seed, 0x000])
    binary = table[table["diagnosis"].isin(LABELS)]
    written = {}
    for split, rows in binary.groupby("split"):
        ids = rows["participant_id"].tolist()
        labels = [LABELS[d] for d in rows["diagnosis"]]
        mri = [str(root / pid / "anat" / f"{pid}_T1w.nii.gz") for pid in ids]
        pet = [str(root / pid / "pet" / f"{pid}_pet.nii.gz") for pid in ids]
        if split == "external":
            pairs = list(zip(mri, labels, strict=True))
        else:
            partner = _derangement(len(ids), rng) if split == "train" else np.arange(len(ids))
            pairs = [(m, pet[j], label) for m, j, label in zip(mri, partner, labels, strict=True)]
        path = root / "pairs" / f"{split}.pkl"
        with atomic_path(path) as tmp:
            tmp.write_bytes(pickle.dumps(pairs, protocol=4))
        written[str(split)] = path
    return written


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (every MRI gets another participant's PET); identity if n < 2."""
    if n < 2:
        return np.arange(n)
    while True:
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order
