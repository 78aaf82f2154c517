"""Montages are complete PNGs: one row per subject, three planes per volume, PET in colour, missing PET left empty."""

import struct

import numpy as np
import pytest

from brainlearn.errors import BrainlearnError
from brainlearn.report.figures import save_montage, save_synthesis_figure

SHAPE = (32, 40, 24)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # width, height from the IHDR chunk


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, SHAPE)


def test_synthesis_figure_has_a_row_per_subject_and_nine_panels_per_row(tmp_path):
    rows = [("sub-01 AD", _volume(0), _volume(1), None), ("sub-02 CN", _volume(2), _volume(3), _volume(4))]
    written = save_synthesis_figure(rows, tmp_path / "figures" / "synthesis.png", spacing=(1.0, 1.2, 1.5))
    assert written == tmp_path / "figures" / "synthesis.png"
    # 3 columns × 3 planes at 1.6 in, 2 rows at 1.8 in, 110 dpi (save_montage's layout)
    assert _png_size(written) == (round(1.6 * 9 * 110), round(1.8 * 2 * 110))
    assert written.stat().st_size > 20_000  # panels were drawn, not left blank
    assert [p.name for p in written.parent.iterdir()] == ["synthesis.png"]  # no partial file left


def test_pet_is_drawn_in_colour_and_mri_in_grey(tmp_path):
    import matplotlib.image

    written = save_synthesis_figure([("sub-01", _volume(0), _volume(1), _volume(2))], tmp_path / "synthesis.png")
    pixels = matplotlib.image.imread(written)[..., :3]  # (height, width, RGB)
    width = pixels.shape[1]
    mri, pet = pixels[:, : width // 3], pixels[:, width // 3 :]
    assert np.ptp(mri, axis=-1).max() < 0.05  # grey: R = G = B
    assert np.ptp(pet, axis=-1).max() > 0.5  # a colour map


def test_synthesis_figure_refuses_no_subjects(tmp_path):
    with pytest.raises(BrainlearnError, match="no subjects to draw"):
        save_synthesis_figure([], tmp_path / "synthesis.png")


def test_montage_of_plain_tuples_is_unchanged(tmp_path):
    rows = [("sub-01", [("T1w", _volume(0)), ("pet", _volume(1), (1.0, 1.0, 2.0))])]
    assert _png_size(save_montage(rows, tmp_path / "montage.png")) == (round(1.6 * 6 * 110), round(1.8 * 110))
