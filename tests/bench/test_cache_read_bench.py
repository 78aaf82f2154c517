"""pytest-benchmark timings of the data path (run with ``make bench``; skipped in ``make test``)."""

import pandas as pd
import pytest
import torch

from brainlearn.bench import write_benchmark_volumes
from brainlearn.data.cache import Cache, build_cache
from brainlearn.io import read_image


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    paths = write_benchmark_volumes(folder / "inputs", n=4, size=96)
    table = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(4)], "session_id": "ses-01", "t1": paths})
    build_cache(table, folder / "cache", progress=False)
    return paths, Cache(folder / "cache")


def test_read_nifti(benchmark, volumes):
    paths, _ = volumes
    benchmark(lambda: [torch.from_numpy(read_image(p, canonical=True).array) for p in paths])


def test_read_cache(benchmark, volumes):
    _, cache = volumes
    benchmark(lambda: [torch.from_numpy(cache.read(i, "t1")) for i in range(len(cache))])
