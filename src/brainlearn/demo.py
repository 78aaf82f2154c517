"""``brainlearn demo``: the pipeline so far on the built-in cohort, in about a minute on a laptop CPU.

1. generate a small cohort from real anatomy (T1, T2, FLAIR, FDG-PET, lesions, a held-out site) with its truth;
2. read it as a BIDS folder into a checked participants table (subject-level splits come with it);
3. cache T1 and PET into the memory-mapped store the training methods read;
4. show the montage and the effects measured on the generated images, and time the cache.
The later stages (training, evaluation, explanations, report) extend this demo as they land.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def run_demo(config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.cohort.generate import generate_cohort
    from brainlearn.cohort.summary import measured_effects, read_truths, save_cohort_montage
    from brainlearn.data.bids import read_bids
    from brainlearn.data.cache import Cache, build_cache
    from brainlearn.data.cache_bench import benchmark_cache_read
    from brainlearn.data.tables import write_table

    cohort_dir = run.root / "cohort"
    report = generate_cohort(
        cohort_dir, subjects=config["subjects"], spacing=config["spacing"], seed=config["seed"], preset="all"
    )
    montage = save_cohort_montage(cohort_dir, report.table, run.figures / "cohort_montage.png")
    effects = measured_effects(read_truths(cohort_dir, report.table))
    log.info("step 1/3: cohort of %d subjects in %.0f s: %s", report.n_subjects, report.seconds, cohort_dir)
    for diagnosis in ("CN", "MCI", "AD"):
        if f"cohort/{diagnosis}/n" in effects:
            log.info(
                "  %-3s n=%-3d hippocampus × %.2f from the diagnosis, ventricles × %.2f in all",
                diagnosis,
                effects[f"cohort/{diagnosis}/n"],
                effects[f"cohort/{diagnosis}/hippocampus_disease_factor"],
                effects[f"cohort/{diagnosis}/ventricle_factor"],
            )

    table = read_bids(cohort_dir)
    table_path = write_table(table, run.root / "participants.tsv")
    log.info("step 2/3: participants table (splits by participant): %s", table_path)

    cached = build_cache(table, run.root / "cache", modalities=("t1", "pet"), dtype="float16", progress=True)
    speed = benchmark_cache_read(table, Cache(run.root / "cache"), modality="t1", repeats=2)
    log.info(
        "step 3/3: cached T1 + PET of %d subjects; reads %.0f× faster than the .nii.gz files",
        cached.n_volumes,
        speed["ratio"],
    )
    log.info("look at: %s (T1, T2, FLAIR, PET of four subjects)", montage)
    log.info("         %s (participants), %s (measured effects)", table_path, run.metrics_path)
    log.info("         %s (ground truth: atrophy and hypometabolism maps)", cohort_dir / "derivatives" / "truth")
    return {
        **effects,
        "demo/cohort_seconds": report.seconds,
        "demo/cached": cached.n_volumes,
        **{f"demo/cache_read/{key}": value for key, value in speed.items()},
    }
