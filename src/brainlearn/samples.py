"""Real images that ship inside installed packages, for the demo, benchmarks and tests."""

from __future__ import annotations

from pathlib import Path

from brainlearn.errors import BrainlearnError


def nibabel_sample(name: str) -> Path:
    """The path of one of nibabel's own test images (e.g. ``anatomical.nii``, a real 2 mm T1 brain)."""
    from nibabel.testing import data_path

    path = Path(data_path) / name
    if not path.exists():
        raise BrainlearnError(f"{path}: nibabel's sample image is missing; reinstall nibabel (pip install nibabel).")
    return path
