"""``brainlearn bench --method vqgan | diffusion | sampling`` at tiny sizes on the CPU."""

import json
import re
from types import SimpleNamespace

import pytest
import torch

from brainlearn import bench
from brainlearn.bench import run_benchmarks
from brainlearn.bench_generation import DEFAULTS
from brainlearn.errors import BrainlearnError

TINY = {"size": 16, "batch": 1, "width": 4, "repeats": 1, "steps": 2}
KEYS = {
    "vqgan": {"ms_reference", "ms", "steps_per_s", "ratio", "peak_gib"},
    "diffusion": {"ms_reference", "ms", "steps_per_s", "ratio", "peak_gib"},
    "sampling": {
        "ms_volume_reference",
        "ms_volume",
        "volumes_per_s",
        "ms_call_reference",
        "ms_call",
        "ms_decode",
        "ratio",
        "peak_gib",
    },
}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these steps take milliseconds, and threads fighting over busy cores take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bench(tmp_path, method, **config):
    run = SimpleNamespace(root=tmp_path)
    results = run_benchmarks({"method": method, "precision": "fp32", **TINY, **config}, run)
    return {key.removeprefix(f"bench/{method}/"): value for key, value in results.items()}


@pytest.mark.parametrize("method", sorted(KEYS))
def test_each_generative_method_times_its_step(tmp_path, method):
    results = _bench(tmp_path, method)
    assert set(results) == KEYS[method]
    assert all(results[key] > 0 for key in results if key != "peak_gib")
    assert results["ratio"] == 1  # fp32: the step is its own reference, timed once
    assert json.loads((tmp_path / "bench.json").read_text())["results"] == {
        f"bench/{method}/{key}": value for key, value in results.items()
    }
    table = (tmp_path / "bench.md").read_text()
    assert f"`brainlearn bench --method {method} --size 16 --batch 1 width=4" in table
    assert "| fp32, no autocast (reference) |" in table and "bf16" not in table


def test_bf16_is_timed_against_the_fp32_reference_in_the_same_run(tmp_path):
    results = _bench(tmp_path, "sampling", precision="bf16")
    assert results["ratio"] == pytest.approx(results["ms_volume_reference"] / results["ms_volume"])
    assert results["ms_call_reference"] > 0 and results["ms_call"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| fp32, no autocast (reference) |" in table and "| bf16 autocast |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's defaults")
def test_unset_sizes_take_the_methods_defaults_for_the_device(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setitem(bench.METHODS, "sampling", lambda config, run: seen.update(config) or {})
    run_benchmarks({"method": "sampling", "size": None, "batch": 3, "repeats": 1}, SimpleNamespace(root=tmp_path))
    on_cpu = DEFAULTS["sampling"][1]
    assert seen["size"] == on_cpu["size"] and seen["steps"] == on_cpu["steps"] and seen["batch"] == 3
    assert json.loads((tmp_path / "bench.json").read_text())["config"]["size"] == on_cpu["size"]


@pytest.mark.parametrize(
    ("method", "config", "message"),
    [
        ("vqgan", {"size": 15}, "bench vqgan: --size must be even and at least 8, not 15."),
        ("diffusion", {"size": 24}, "bench diffusion: --size must be a multiple of 16"),
        ("sampling", {"width": 5}, "bench sampling: width must be a positive even number (64 in document 003), not 5"),
        ("sampling", {"steps": 301}, "bench sampling: steps must lie in 1 … 300, not 301."),
    ],
)
def test_sizes_the_models_cannot_take_are_refused_with_what_to_pass(tmp_path, method, config, message):
    with pytest.raises(BrainlearnError, match="^" + re.escape(message)):
        _bench(tmp_path, method, **config)


def test_an_unknown_method_lists_the_known_ones(tmp_path):
    with pytest.raises(BrainlearnError) as error:
        run_benchmarks({"method": "vq-gan"}, SimpleNamespace(root=tmp_path))
    assert str(error.value) == (
        "bench: unknown method 'vq-gan'; known methods: cache-read, cohort, diffusion, preprocess, sampling, "
        "sharegan, vqgan."
    )
