"""``brainlearn bench --method M``: every model method's ladder of fast-path arms at tiny sizes on the CPU, and the
numerics criterion of the fast path (each arm against the plain float32 reference on the same weights and inputs)."""

import json
import math
import re
from types import SimpleNamespace

import pytest
import torch

from brainlearn import bench
from brainlearn.bench import run_benchmarks
from brainlearn.bench_models import MODEL_METHODS, TOLERANCE_ARM
from brainlearn.errors import BrainlearnError
from brainlearn.fast import within_bf16_tolerance

TINY = {
    "awarenet": {"size": 32, "batch": 2, "width": 8},
    "sharegan": {"size": 32, "batch": 1, "width": 2},
    "joint": {"size": 32, "batch": 1, "width": 2},
    "inference": {"size": 32, "batch": 1, "width": 2},
    "brain-age": {"size": 32, "batch": 2, "width": 2},
    "segmentation": {"size": 32, "batch": 2, "width": 1},
    "vqgan": {"size": 16, "batch": 1, "width": 4},
    "diffusion": {"size": 16, "batch": 2, "width": 4},
    "sampling": {"size": 16, "batch": 1, "width": 4, "steps": 2},
}
TRAINING = {name for name, method in MODEL_METHODS.items() if method.training}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these steps take milliseconds, and threads fighting over busy cores take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bench(tmp_path, method, **config):
    run = SimpleNamespace(root=tmp_path)
    settings = {"method": method, "precision": "fp32", "repeats": 1, "compile": False, "steps": None}
    results = run_benchmarks(settings | TINY[method] | config, run)
    return {key.removeprefix(f"bench/{method}/"): value for key, value in results.items()}


def test_every_model_method_has_tiny_settings_here():
    assert set(TINY) == set(MODEL_METHODS)


@pytest.mark.parametrize("method", sorted(MODEL_METHODS))
def test_in_float32_every_switch_computes_what_the_reference_computes(tmp_path, method):
    """channels-last, fused Adam and the method's own fast path change the order of float32 arithmetic only."""
    results = _bench(tmp_path, method)
    arms = results["arms"]
    names = [arm["arm"] for arm in arms]
    assert names[0] == "fp32 reference" and "+ channels-last" in names
    assert ("+ fused Adam" in names) == (method in TRAINING)
    assert ("bf16" in " ".join(names)) is False
    for arm in arms[1:]:
        # a deep network at initialization moves its gradients by up to tens of percent under bf16 rounding of its
        # weights; float32 reordering moves them by at most a hundredth of that
        assert arm["output_error"] <= max(1e-5, 0.01 * results["output_tolerance"]), arm
        if method in TRAINING:
            assert arm["gradient_error"] <= max(1e-5, 0.01 * results["gradient_tolerance"]), arm
        else:
            assert math.isnan(arm["gradient_error"])
    if method in ("sharegan", "joint"):  # the fused norm chain keeps the input only, not each intermediate
        assert arms[-1]["saved_gib"] < arms[0]["saved_gib"]
    assert results["ms"] > 0 and results["ms_reference"] > 0
    assert results["ratio"] == pytest.approx(results["ms_reference"] / results["ms"])
    assert results["tflop_per_step"] > 0 and results["tflops"] > 0 and results["volumes_per_s"] > 0
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["method"] == method and saved["results"]["bench/" + method + "/ms"] == results["ms"]
    table = (tmp_path / "bench.md").read_text()
    assert f"`brainlearn bench --method {method} --size {TINY[method]['size']} --batch" in table
    assert all(f"| {name} |" in table for name in names) and f"| {TOLERANCE_ARM} |" in table


@pytest.mark.parametrize("method", ["awarenet", "brain-age", "diffusion", "sampling", "sharegan", "vqgan"])
def test_the_bf16_fast_path_agrees_with_float32_within_bf16_tolerance(tmp_path, method):
    results = _bench(tmp_path, method, precision="bf16")
    names = [arm["arm"] for arm in results["arms"]]
    assert names[:3] == ["fp32 reference", "+ bf16 autocast", "+ channels-last"]
    for arm in results["arms"][1:]:
        assert within_bf16_tolerance(arm["output_error"], results["output_tolerance"]), arm
        if method in TRAINING:
            assert within_bf16_tolerance(arm["gradient_error"], results["gradient_tolerance"]), arm
    assert results["output_error"] > 0  # bf16 did run: it rounds


def test_the_sharegan_reference_arm_runs_six_unfused_generator_calls(tmp_path, monkeypatch):
    from brainlearn.models.sharesynnet import ShareSynNet

    calls = []
    forward = ShareSynNet.forward

    def counted(self, x, alpha=0.0):
        calls.append(self.fused)
        return forward(self, x, alpha)

    monkeypatch.setattr(ShareSynNet, "forward", counted)
    _bench(tmp_path, "sharegan", repeats=1)
    # reference: probe, FLOP count, tolerance probe, warm-up and one timed step, six calls each (30); channels-last
    # and fused Adam: probe and two steps (18 each); the model's own arm: two batched calls each (6)
    assert calls == [False] * (30 + 18 + 18) + [True] * 6


def test_all_runs_every_model_method_and_writes_one_summary(tmp_path, monkeypatch):
    seen = []

    def fake(name):
        def run(config, run):
            seen.append((name, config["size"]))
            (run.root / "bench.md").write_text(f"# {name}\n")
            keys = ("ms_reference", "ms", "ratio", "volumes_per_s", "tflops", "peak_gib", "output_error")
            return {f"bench/{name}/{key}": 1.0 for key in keys}

        return run

    for name in MODEL_METHODS:
        monkeypatch.setitem(bench.METHODS, name, fake(name))
    run_benchmarks({"method": "all", "precision": "bf16", "size": 999, "repeats": 1}, SimpleNamespace(root=tmp_path))
    assert [name for name, _ in seen] == list(MODEL_METHODS)
    assert all(size != 999 for _, size in seen)  # each at its own default size
    table = (tmp_path / "bench.md").read_text()
    assert all(f"| {name} | 1.0 | 1.0 | 1.00× |" in table and f"# {name}" in table for name in MODEL_METHODS)
    assert (tmp_path / "awarenet" / "bench.json").is_file() and (tmp_path / "bench.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's defaults")
def test_unset_sizes_take_the_methods_defaults_for_the_device(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setitem(bench.METHODS, "sampling", lambda config, run: seen.update(config) or {})
    run_benchmarks({"method": "sampling", "size": None, "batch": 3, "repeats": 1}, SimpleNamespace(root=tmp_path))
    on_cpu = MODEL_METHODS["sampling"].cpu
    assert seen["size"] == on_cpu["size"] and seen["steps"] == on_cpu["steps"] and seen["batch"] == 3
    assert json.loads((tmp_path / "bench.json").read_text())["config"]["size"] == on_cpu["size"]


@pytest.mark.parametrize(
    ("method", "config", "message"),
    [
        ("vqgan", {"size": 15}, "bench vqgan: --size must be a multiple of 2 and at least 8"),
        ("diffusion", {"size": 24}, "bench diffusion: --size must be a multiple of 16 and at least 16"),
        ("sharegan", {"size": 16}, "bench sharegan: --size must be a multiple of 16 and at least 32"),
        ("awarenet", {"width": 12}, "bench awarenet: width must be a multiple of 8 (64 in document 000), not 12."),
        ("sampling", {"width": 5}, "bench sampling: width must be even (64 in document 003), not 5."),
        ("sampling", {"steps": 301}, "bench sampling: steps must lie in 1 … 300, not 301."),
        ("brain-age", {"batch": 0}, "bench brain-age: batch must be a positive integer, not 0."),
    ],
)
def test_sizes_the_models_cannot_take_are_refused_with_what_to_pass(tmp_path, method, config, message):
    with pytest.raises(BrainlearnError, match="^" + re.escape(message)):
        _bench(tmp_path, method, **config)


def test_an_unknown_method_lists_the_known_ones(tmp_path):
    with pytest.raises(BrainlearnError) as error:
        run_benchmarks({"method": "vq-gan"}, SimpleNamespace(root=tmp_path))
    assert str(error.value) == (
        "bench: unknown method 'vq-gan'; known methods: all, awarenet, brain-age, cache-read, cohort, diffusion, "
        "inference, joint, loader, preprocess, sampling, segmentation, sharegan, vqgan."
    )


def test_the_loader_benchmark_times_the_training_loader_with_and_without_workers(tmp_path):
    config = {"method": "loader", "size": 16, "n": 4, "batch": 2, "repeats": 1, "dtype": "float16"}
    results = run_benchmarks(config | {"num_workers": 1}, SimpleNamespace(root=tmp_path))
    assert results["bench/loader/volumes_per_s_0_workers"] > 0 and results["bench/loader/volumes_per_s_1_workers"] > 0
    assert results["bench/loader/volumes_per_s"] == max(
        results["bench/loader/volumes_per_s_0_workers"], results["bench/loader/volumes_per_s_1_workers"]
    )
    table = (tmp_path / "bench.md").read_text()
    assert "4 cached volumes of 16×19×16 voxels, batch 2" in table
    assert "| 0 | False |" in table and "| 1 | False |" in table
