"""``brainlearn demo``: the pipeline so far, on real images that ship with nibabel, in seconds on a CPU.

The demo cohort holds nibabel's real sample scans (a 2 mm T1 brain in two orientations, a MINC volume, a small
NIfTI) and two broken subjects as real data has them (a 4D file, an image full of NaNs), so the demo also shows
what happens to bad input: those subjects are reported and skipped, and the rest of the run goes on.
The later pipeline stages (the built-in cohort, training, explanations) extend this demo as they land.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from brainlearn.samples import nibabel_sample

log = logging.getLogger(__name__)

# participant_id, nibabel sample file, diagnosis, age, sex, site
DEMO_SUBJECTS = (
    ("sub-01", "anatomical.nii", "CN", 67.0, "F", "nibabel"),
    ("sub-02", "reoriented_anat_moved.nii", "AD", 74.0, "M", "nibabel"),
    ("sub-03", "tiny.mnc", "CN", 71.0, "M", "minc"),
    ("sub-04", "standard.nii.gz", "AD", 80.0, "F", "nibabel"),
    ("sub-05", "example4d.nii.gz", "CN", 62.0, "F", "nibabel"),  # 4D: skipped with a message
    ("sub-06", "resampled_anat_moved.nii", "AD", 77.0, "M", "nibabel"),  # NaN voxels: skipped with a message
)


def demo_table():
    """The demo's participants table (absolute paths into nibabel's installed test data)."""
    import pandas as pd

    rows = [
        {
            "participant_id": pid,
            "session_id": "ses-01",
            "t1": str(nibabel_sample(name)),
            "diagnosis": dx,
            "age": age,
            "sex": sex,
            "site": site,
        }
        for pid, name, dx, age, sex, site in DEMO_SUBJECTS
    ]
    return pd.DataFrame(rows)


def run_demo(config: dict[str, Any], run) -> dict[str, Any]:
    """Build the table, split it by participant, cache it, draw the cached volumes and time the cache."""
    from brainlearn.data.cache import Cache, build_cache
    from brainlearn.data.cache_bench import benchmark_cache_read
    from brainlearn.data.splits import assign_splits
    from brainlearn.data.tables import read_table, write_table
    from brainlearn.report.figures import save_montage

    table_path = write_table(demo_table(), run.root / "participants.tsv")
    table = assign_splits(read_table(table_path), val=0.2, test=0.2, seed=config["seed"])
    write_table(table, table_path)
    log.info("step 1/4: participants table with subject-level splits: %s", table_path)

    report = build_cache(table, run.root / "cache", modalities=("t1",), dtype="float16", progress=True)
    log.info("step 2/4: cached %d volumes, skipped %d", report.n_volumes, report.n_skipped)

    cache = Cache(run.root / "cache")
    montage = save_montage(_montage_rows(cache), run.figures / "cache_montage.png")
    log.info("step 3/4: montage of the cached volumes: %s", montage)

    cached = table[table["participant_id"].isin(cache.index["participant_id"])]
    speed = benchmark_cache_read(cached, cache, modality="t1", repeats=3)
    log.info(
        "step 4/4: reading from the cache: %.0f volumes/s vs %.0f from the NIfTI files (%.1f×)",
        speed["cache_volumes_per_s"],
        speed["direct_volumes_per_s"],
        speed["ratio"],
    )
    log.info("look at: %s (montage), %s (table), %s (metrics)", montage, table_path, run.metrics_path)
    return {
        "demo/cached": report.n_volumes,
        "demo/skipped": [f"{pid}: {reason}" for pid, _, reason in report.skipped],
        **{f"demo/cache_read/{key}": value for key, value in speed.items()},
    }


def _montage_rows(cache) -> list[tuple[str, list[tuple]]]:
    rows = []
    for i, row in cache.index.reset_index(drop=True).iterrows():
        title = f"{row['participant_id']} ({row['diagnosis']})"
        spacing = np.linalg.norm(cache.affine(i, "t1")[:3, :3], axis=0)
        rows.append((title, [("T1", cache.read(i, "t1"), tuple(spacing))]))
    return rows
