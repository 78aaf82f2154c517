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
from pathlib import Path
from typing import Any

import numpy as np

from brainlearn.atomic import write_json, write_text
from brainlearn.bench_generation import bench_diffusion, bench_sampling, bench_vqgan, method_defaults
from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)


def bench_cache_read(config: dict[str, Any], run) -> dict[str, Any]:
    """Volumes per second read from the cache vs straight from the ``.nii.gz`` files, on the same volumes."""
    import pandas as pd

    from brainlearn.data.cache import Cache, build_cache
    from brainlearn.data.cache_bench import benchmark_cache_read

    paths = write_benchmark_volumes(run.root / "inputs", n=config["n"], size=config["size"])
    table = pd.DataFrame(
        {"participant_id": [f"sub-{i:03d}" for i in range(len(paths))], "session_id": "ses-01", "t1": paths}
    )
    build_cache(table, run.root / "cache", modalities=("t1",), dtype=config["dtype"], canonical=True, progress=False)
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
    write_text(run.root / "bench.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
    return {f"bench/cache-read/{key}": value for key, value in result.items()}


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
    write_text(run.root / "bench.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
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
    write_text(run.root / "bench.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
    return {f"bench/preprocess/seconds_{k}": v for k, v in seconds.items()} | {
        "bench/preprocess/similarity": result.qc.get("similarity")
    }


def bench_sharegan(config: dict[str, Any], run) -> dict[str, Any]:
    """One ShareGAN training step at ``size``³, batch ``batch``: the six generator passes as two batched calls
    (brainlearn) against six separate calls (the reference code's way), same weights and inputs, in one run."""
    import torch

    from brainlearn.commands_synthesis import build_gan
    from brainlearn.methods.sharegan import ShareGANModule

    size, batch, width = config["size"], config["batch"], config["width"]
    if size % 16 or size < 32:
        raise BrainlearnError(f"bench sharegan: --size must be a multiple of 16 and at least 32, not {size}.")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    downsamples = min(5, size.bit_length() - 3)  # the discriminator keeps at least 2 voxels per axis
    module = ShareGANModule(*build_gan({"width": width, "downsamples": downsamples})).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    mri, pet = (torch.rand(batch, 1, size, size, size, device=device, generator=generator) * 2 - 1 for _ in "ab")
    bf16 = config["precision"] == "bf16"

    def step(batched: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = module.translate_both_ways(mri, pet) if batched else _six_calls(module.generator, mri, pet)
            loss_g = module.generator_losses(mri, pet, out)["loss_g"]
        loss_g.backward()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss_d = module.discriminator_loss(mri, pet, out)
        loss_d.backward()
        module.zero_grad(set_to_none=True)

    rows = []
    for name, batched in (("six separate generator calls (reference)", False), ("two batched calls", True)):
        seconds, peak = time_step(lambda b=batched: step(b), config["repeats"], device)
        rows.append((name, seconds, peak))
    ratio = rows[0][1] / rows[1][1]
    where = f"{device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()})"
    lines = [
        f"# ShareGAN step: {size}³, batch {batch}, width {width}, {config['precision']}, {where}",
        "",
        f"{time.strftime('%Y-%m-%d')}, `brainlearn bench --method sharegan --size {size} --batch {batch} "
        f"width={width} precision={config['precision']}`, median of {config['repeats']} after one warm-up step",
        "",
        "| generator passes | ms/step | peak GPU memory (GiB) | speed-up |",
        "|---|---|---|---|",
        *[f"| {n} | {1000 * t:.0f} | {p:.2f} | {rows[0][1] / t:.2f}× |" for n, t, p in rows],
    ]
    write_text(run.root / "bench.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
    return {
        "bench/sharegan/ms_reference": 1000 * rows[0][1],
        "bench/sharegan/ms": 1000 * rows[1][1],
        "bench/sharegan/ratio": ratio,
        "bench/sharegan/peak_gib": rows[1][2],
    }


def _six_calls(generator, mri, pet) -> dict:
    """The translations of :meth:`ShareGANModule.translate_both_ways`, one generator call each."""
    from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI

    fake_pet, fake_mri = generator(mri, MRI_TO_PET), generator(pet, PET_TO_MRI)
    return {
        "fake_pet": fake_pet,
        "fake_mri": fake_mri,
        "same_pet": generator(pet, MRI_TO_PET),
        "same_mri": generator(mri, PET_TO_MRI),
        "cycled_mri": generator(fake_pet, PET_TO_MRI),
        "cycled_pet": generator(fake_mri, MRI_TO_PET),
    }


def time_step(step: Callable[[], None], repeats: int, device) -> tuple[float, float]:
    """Median seconds of ``step`` over ``repeats`` calls after one warm-up, and peak CUDA memory in GiB (0 on CPU)."""
    import torch

    cuda = device.type == "cuda"
    step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return float(np.median(times)), peak


METHODS: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {
    "preprocess": bench_preprocess,
    "cache-read": bench_cache_read,
    "cohort": bench_cohort,
    "sharegan": bench_sharegan,
    "vqgan": bench_vqgan,
    "diffusion": bench_diffusion,
    "sampling": bench_sampling,
}
# What an unset (None or absent) --size, --batch or width means; the generative methods' depend on the device.
FIXED_DEFAULTS = {"cache-read": {"size": 96}, "sharegan": {"size": 96, "batch": 1, "width": 32}}


def run_benchmarks(config: dict[str, Any], run) -> dict[str, Any]:
    method = config["method"]
    if method not in METHODS:
        raise BrainlearnError(f"bench: unknown method {method!r}; known methods: {', '.join(sorted(METHODS))}.")
    defaults = FIXED_DEFAULTS.get(method) or method_defaults(method)
    config = config | {key: value for key, value in defaults.items() if config.get(key) is None}
    metrics = METHODS[method](config, run)
    write_json(run.root / "bench.json", {"method": method, "config": config, "results": metrics})
    log.info("look at: %s", run.root / "bench.md")
    return metrics
