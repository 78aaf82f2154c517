"""N4 bias correction on a real T1 with a known bias field, and the intensity normalizations."""

import numpy as np
import pytest

from brainlearn.cohort.anatomy import load_anatomy
from brainlearn.errors import BrainlearnError
from brainlearn.io import Image
from brainlearn.preprocess.intensity import n4_correct, normalize, white_matter_cv


@pytest.fixture(scope="module")
def template():
    return load_anatomy(2.0)  # the real ICBM152 T1 and its white-matter map


def test_n4_removes_an_added_bias_field(template):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in template.shape], indexing="ij")
    bias = np.exp(0.3 * x + 0.2 * y * z - 0.25 * z**2).astype(np.float32)
    biased = Image(array=(template.t1 * 1000 * bias).astype(np.float32), affine=template.affine)
    white = template.wm > 0.9
    corrected, field = n4_correct(biased)
    before, after = white_matter_cv(biased.array, white), white_matter_cv(corrected.array, white)
    assert after < 0.4 * before
    assert after < 1.2 * white_matter_cv(template.t1, white)  # about as flat as the unbiased template
    assert corrected.array.shape == template.shape and np.array_equal(corrected.affine, template.affine)
    recovered = np.corrcoef(np.log(field[white]), np.log(bias[white]))[0, 1]
    assert recovered > 0.9  # the field found is the field added


def test_normalizations(template):
    image = Image(array=(template.t1 * 800 + 50).astype(np.float32) * (template.t1 > 0), affine=template.affine)
    brain = template.t1 > 0.02
    z = normalize(image, "zscore", brain=brain).array
    assert z[brain].mean() == pytest.approx(0, abs=1e-4) and z[brain].std() == pytest.approx(1, abs=1e-3)
    assert (z[~brain] == 0).all()
    m = normalize(image, "minmax", brain=brain).array
    assert m.min() == -1 and m.max() == 1 and (m[~brain] == -1).all()
    pons = template.region((16,))
    suvr = normalize(image, "suvr", reference=pons).array
    assert suvr[pons].mean() == pytest.approx(1.0, rel=1e-5)


def test_bad_normalization_requests(template):
    image = Image(array=template.t1.copy(), affine=template.affine)
    with pytest.raises(BrainlearnError, match="normalization must be one of"):
        normalize(image, "percentile")
    with pytest.raises(BrainlearnError, match="SUVR needs a non-empty reference region"):
        normalize(image, "suvr", reference=np.zeros(template.shape, bool))
    with pytest.raises(BrainlearnError, match="N4 needs positive intensities"):
        n4_correct(Image(array=np.zeros((8, 9, 7), np.float32), affine=np.eye(4)))
