"""``brainlearn bench``: time one method and compare it, in the same run, with its plain reference.

Methods register here as ``name -> function(config, run) -> metrics``. Each writes ``bench.json`` and a Markdown
table ``bench.md`` into the run folder. Ratios are measured within one run: these machines are shared and noisy,
so only the ratio between two things timed side by side is worth reporting from a CPU.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from brainlearn.atomic import write_json, write_text
from brainlearn.bench_models import MODEL_METHODS, bench_model, method_defaults
from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)


def bench_cache_read(config: dict[str, Any], run) -> dict[str, Any]:
    """Volumes per second read from the cache vs straight from the ``.nii.gz`` files, on the same volumes."""
    from brainlearn.data.cache import Cache
    from brainlearn.data.cache_bench import benchmark_cache_read

    table = benchmark_cache(config, run)
    result = benchmark_cache_read(table, Cache(run.root / "cache"), modality="t1", repeats=config["repeats"])
    rows = [
        ("NIfTI (.nii.gz) read, reoriented, float32", result["direct_volumes_per_s"], 1.0),
        (
            f"cache ({config['dtype']} memmap) to float32 tensor",
            result["cache_volumes_per_s"],
            result["ratio"],
        ),
    ]
    shape = "×".join(str(n) for n in _benchmark_shape(config["size"]))
    lines = [
        f"# cache-read benchmark: {config['n']} volumes of {shape} voxels, best of {config['repeats']}",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, `brainlearn bench "
        f"--method cache-read --size {config['size']} --n {config['n']} dtype={config['dtype']}`",
        "",
        "| reader | volumes/s | ratio |",
        "|---|---|---|",
        *[f"| {name} | {rate:.1f} | {ratio:.1f}× |" for name, rate, ratio in rows],
    ]
    write_report(run, lines)
    return {f"bench/cache-read/{key}": value for key, value in result.items()}


def bench_loader(config: dict[str, Any], run) -> dict[str, Any]:
    """Volumes per second the training loader delivers onto the device (cache → transform with augmentation →
    batches, pinned and copied to a GPU when there is one), with no workers and with ``num_workers`` of them.

    The rate to compare with what a model consumes (``brainlearn bench --method M``'s volumes/s at the same size):
    a loader slower than the model leaves the GPU waiting.
    """
    from brainlearn.data.cache import Cache
    from brainlearn.data.cache_bench import benchmark_loader
    from brainlearn.data.datasets import VolumeDataset
    from brainlearn.data.loaders import VolumeTransform, resolve_num_workers

    table = benchmark_cache(config, run)
    dataset = VolumeDataset(Cache(run.root / "cache"), transform=VolumeTransform(augment=True, shift=4))
    workers = sorted({0, resolve_num_workers(config["num_workers"])})
    batch = config["batch"] or 2
    batches = max(1, config["repeats"] * len(table) // batch)  # each volume about ``repeats`` times
    rows = [benchmark_loader(dataset, batch_size=batch, num_workers=n, batches=batches) for n in workers]
    shape = "×".join(str(n) for n in _benchmark_shape(config["size"]))
    lines = [
        f"# loader benchmark: {config['n']} cached volumes of {shape} voxels, batch {batch}, flip and shift",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, `brainlearn bench --method "
        f"loader --size {config['size']} --n {config['n']} --batch {batch} num_workers={config['num_workers']}`",
        "",
        "| workers | pinned | volumes/s | first batch s |",
        "|---|---|---|---|",
        *[f"| {r['workers']} | {r['pinned']} | {r['volumes_per_s']:.1f} | {r['startup_s']:.2f} |" for r in rows],
    ]
    write_report(run, lines)
    best = max(rows, key=lambda r: r["volumes_per_s"])
    return {"bench/loader/volumes_per_s": best["volumes_per_s"], "bench/loader/workers": best["workers"]} | {
        f"bench/loader/volumes_per_s_{r['workers']}_workers": r["volumes_per_s"] for r in rows
    }


def benchmark_cache(config: dict[str, Any], run):
    """A cache of ``config['n']`` benchmark T1 volumes (:func:`write_benchmark_volumes`) in ``run.root / "cache"``,
    all in the training split with alternating CN / AD labels; returns its table."""
    import pandas as pd

    from brainlearn.data.cache import build_cache

    paths = write_benchmark_volumes(run.root / "inputs", n=config["n"], size=config["size"])
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(len(paths))],
            "session_id": "ses-01",
            "diagnosis": [("CN", "AD")[i % 2] for i in range(len(paths))],
            "split": "train",
            "t1": paths,
        }
    )
    build_cache(table, run.root / "cache", modalities=("t1",), dtype=config["dtype"], canonical=True, progress=False)
    return table


def write_report(run, lines: list[str]) -> None:
    """Write the Markdown ``lines`` to ``run.root / "bench.md"`` (atomically) and log them."""
    write_text(run.root / "bench.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))


def write_benchmark_volumes(folder: Path, *, n: int, size: int, seed: int = 0) -> list[str]:
    """Write ``n`` brain-like gzip NIfTI volumes (nibabel's real T1 sample, upsampled, with noise); reuse them."""
    from scipy import ndimage

    from brainlearn.io import read_image, write_image
    from brainlearn.samples import nibabel_sample

    base = read_image(nibabel_sample("anatomical.nii"), canonical=True)
    shape = _benchmark_shape(size)
    zoom = [t / s for t, s in zip(shape, base.shape, strict=True)]
    upsampled = ndimage.zoom(base.array, zoom, order=1).astype(np.float32)
    affine = base.affine @ np.diag([1 / z for z in zoom] + [1.0])
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"sub-{i:03d}_T1w.nii.gz"
        if not path.exists():
            noisy = upsampled * rng.uniform(0.8, 1.2) + rng.normal(0, 50, shape).astype(np.float32)
            write_image(path, noisy, affine)
        paths.append(str(path))
    return paths


def _benchmark_shape(size: int) -> tuple[int, int, int]:
    """A brain-shaped box (MNI 182×218×182 proportions) whose first edge is ``size``."""
    return size, round(size * 218 / 182), size


def bench_cohort(config: dict[str, Any], run) -> dict[str, Any]:
    """Subjects per second of the built-in cohort generator at ``spacing`` mm, with peak memory."""
    import os
    import resource
    import shutil

    from brainlearn.cohort.anatomy import load_anatomy
    from brainlearn.cohort.generate import generate_cohort

    folder = run.root / f"cohort-{config['spacing']:g}mm"
    shutil.rmtree(folder, ignore_errors=True)  # time a full generation, never a resumed one
    start = time.perf_counter()
    load_anatomy(config["spacing"])
    setup = time.perf_counter() - start
    report = generate_cohort(folder, subjects=config["n"], spacing=config["spacing"], progress=False)
    total = time.perf_counter() - start
    peak_mb = {  # ru_maxrss is in KiB on Linux
        who: resource.getrusage(which).ru_maxrss / 1024
        for who, which in (("main", resource.RUSAGE_SELF), ("workers", resource.RUSAGE_CHILDREN))
    }
    result = {
        "subjects": report.n_subjects,
        "spacing_mm": config["spacing"],
        "jobs": os.cpu_count(),
        "seconds_total": total,
        "seconds_setup": setup,
        "subjects_per_s": report.n_subjects / total,
        "peak_rss_mb_main": peak_mb["main"],
        "peak_rss_mb_worker": peak_mb["workers"],
    }
    lines = [
        f"# cohort benchmark: {config['n']} subjects at {config['spacing']:g} mm, {os.cpu_count()} worker(s)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, `brainlearn bench "
        f"--method cohort --n {config['n']} spacing={config['spacing']:g}`",
        "",
        "| subjects | total s | setup s | subjects/s | peak RSS main / worker (MB) |",
        "|---|---|---|---|---|",
        f"| {report.n_subjects} | {total:.1f} | {setup:.1f} | {result['subjects_per_s']:.2f} | "
        f"{peak_mb['main']:.0f} / {peak_mb['workers']:.0f} |",
    ]
    write_report(run, lines)
    shutil.rmtree(folder, ignore_errors=True)
    return {f"bench/cohort/{key}": value for key, value in result.items()}


COLIN27 = "/usr/share/mricron/templates/ch2.nii.gz"


def bench_preprocess(config: dict[str, Any], run) -> dict[str, Any]:
    """Seconds per step for one real 1 mm T1 head (Colin27, with skull) from raw to the MNI grid, one process."""
    import shutil
    from pathlib import Path

    from brainlearn.preprocess.subject import STEPS, preprocess_session

    if not Path(COLIN27).exists():
        raise BrainlearnError(f"{COLIN27}: missing; install Debian's mricron-data (apt-get install mricron-data).")
    folder = run.root / "preprocess"
    shutil.rmtree(folder, ignore_errors=True)
    settings = {
        "steps": list(STEPS),
        "spacing": 1.0,
        "shape": None,
        "pad_to": None,
        "normalize": {"mr": "zscore", "pet": "suvr"},
        "suvr_reference": "pons",
    }
    timings = []
    for name in ("first", "second"):  # the first scan also loads deepbet and the template
        start = time.perf_counter()
        result = preprocess_session({"participant_id": name, "session_id": "ses-01", "t1": COLIN27}, folder, settings)
        timings.append({**result.seconds, "total": time.perf_counter() - start})
    first, seconds = timings
    lines = [
        "# preprocess benchmark: one 1 mm T1 head (Colin27, 181×217×181, with skull) to the 182×218×182 MNI grid",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, one process, "
        "`brainlearn bench --method preprocess`",
        "",
        "| step | first scan (loads the models) s | each further scan s |",
        "|---|---|---|",
        *[f"| {step} | {first[step]:.1f} | {value:.1f} |" for step, value in seconds.items()],
        "",
        f"registration similarity to the template: {result.qc.get('similarity', float('nan')):.3f}",
    ]
    write_report(run, lines)
    return {f"bench/preprocess/seconds_{k}": v for k, v in seconds.items()} | {
        "bench/preprocess/similarity": result.qc.get("similarity")
    }


METHODS: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {
    "preprocess": bench_preprocess,
    "cache-read": bench_cache_read,
    "cohort": bench_cohort,
    "loader": bench_loader,
    **{name: partial(bench_model, name) for name in MODEL_METHODS},
}
# What an unset (None or absent) --size, --batch or width means for the data benchmarks; the models' depend on
# the device (brainlearn.bench_models.method_defaults).
FIXED_DEFAULTS = {"cache-read": {"size": 96}, "loader": {"size": 96}}


def run_benchmarks(config: dict[str, Any], run) -> dict[str, Any]:
    """Run ``config['method']`` (or every model method for ``all``) into ``run.root``: bench.json and bench.md."""
    method = config["method"]
    if method == "all":
        return _run_all(config, run)
    if method not in METHODS:
        known = ", ".join(["all", *sorted(METHODS)])
        raise BrainlearnError(f"bench: unknown method {method!r}; known methods: {known}.")
    config = _with_defaults(method, config)
    metrics = METHODS[method](config, run)
    write_json(run.root / "bench.json", {"method": method, "config": config, "results": metrics})
    log.info("look at: %s", run.root / "bench.md")
    return metrics


def _with_defaults(method: str, config: dict[str, Any]) -> dict[str, Any]:
    defaults = FIXED_DEFAULTS.get(method) or (method_defaults(method) if method in MODEL_METHODS else {})
    return config | {key: value for key, value in defaults.items() if config.get(key) is None}


def _run_all(config: dict[str, Any], run) -> dict[str, Any]:
    """Every model method at its default sizes for this device (``--size`` etc. are ignored): one summary table
    (the last arm of each ladder against its fp32 reference) and each method's own table below it."""
    from types import SimpleNamespace

    metrics: dict[str, Any] = {}
    sections, summary = [], []
    for method in MODEL_METHODS:
        folder = run.root / method
        folder.mkdir(parents=True, exist_ok=True)
        settings = _with_defaults(
            method, {**config, "method": method, "size": None, "batch": None, "width": None, "steps": None}
        )
        results = METHODS[method](settings, SimpleNamespace(root=folder))
        write_json(folder / "bench.json", {"method": method, "config": settings, "results": results})
        metrics |= results
        row = {key.removeprefix(f"bench/{method}/"): value for key, value in results.items()}
        summary.append(
            f"| {method} | {row['ms_reference']:.1f} | {row['ms']:.1f} | {row['ratio']:.2f}× | "
            f"{row['volumes_per_s']:.2f} | {row['tflops']:.3g} | {row['peak_gib']:.2f} | {row['output_error']:.1e} |"
        )
        sections.append((folder / "bench.md").read_text(encoding="utf-8"))
    lines = [
        f"# every model method, {config['precision']}{' + torch.compile' if config.get('compile') else ''}",
        "",
        f"{time.strftime('%Y-%m-%d')}, `brainlearn bench --method all --precision {config['precision']}"
        f"{' --compile ' + str(config['compile']) if config.get('compile') else ''}`; each method at its default "
        "size for this device (its own table below); fast = the last arm of its ladder",
        "",
        "| method | fp32 reference ms | fast ms | speed-up | volumes/s | TFLOP/s | peak GPU GiB | output error |",
        "|---|---|---|---|---|---|---|---|",
        *summary,
        "",
        *sections,
    ]
    write_report(run, lines)
    write_json(run.root / "bench.json", {"method": "all", "config": config, "results": metrics})
    log.info("look at: %s", run.root / "bench.md")
    return metrics
