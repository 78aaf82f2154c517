"""Occlusion sensitivity (through MONAI) and AwareNet's attention volumes."""

import pytest
import torch
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.explain.attention import attention_maps
from brainlearn.explain.occlusion import occlusion_map
from brainlearn.models.networks import build_network

SHAPE = (16, 20, 12)
REGION = (slice(2, 8), slice(10, 18), slice(6, 12))


class RegionModel(nn.Module):
    """Class 1's logit (or, as a regressor, the output) is the mean intensity inside REGION."""

    def __init__(self, outputs: int):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):
        evidence = x[(slice(None), 0, *REGION)].mean((1, 2, 3))
        return torch.stack([-evidence, evidence], 1) if self.outputs == 2 else evidence[:, None]


@pytest.mark.parametrize("classifier", [True, False])
def test_hiding_the_region_the_output_depends_on_is_what_the_map_shows(classifier):
    torch.manual_seed(0)
    image = torch.rand(2, 1, *SHAPE) + 1.0
    maps = occlusion_map(RegionModel(2 if classifier else 1), image, target=1 if classifier else 0,
                         classifier=classifier, patch=4)  # fmt: skip
    assert maps.shape == (2, *SHAPE) and float(maps.min()) >= 0 and float(maps.max()) == pytest.approx(1.0)
    inside = torch.zeros(SHAPE, dtype=torch.bool)
    inside[REGION] = True
    for volume in maps:
        assert float(volume[inside].mean()) > 0.3
        # a cube overlapping the region's edge still hides part of it: only voxels 4 away count as far
        far = torch.ones(SHAPE, dtype=torch.bool)
        far[tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in REGION)] = False
        assert float(volume[far].max()) < 1e-4  # float rounding of the averaged softmax


def test_bad_patch_and_overlap_are_refused():
    image = torch.rand(1, 1, *SHAPE)
    with pytest.raises(BrainlearnError, match="patch must be 1 to 12 voxels"):
        occlusion_map(RegionModel(2), image, target=1, classifier=True, patch=13)
    with pytest.raises(BrainlearnError, match=r"overlap must be in \[0, 1\)"):
        occlusion_map(RegionModel(2), image, target=1, classifier=True, overlap=1.0)


def test_awarenet_attention_volumes():
    torch.manual_seed(0)
    network = build_network("awarenet", in_channels=1, outputs=2, options={"width": 8})
    maps = attention_maps(network, torch.randn(2, 1, 32, 40, 24))
    assert set(maps) == {"attention", "sliceattention"}
    assert maps["attention"].shape == (2, 32, 40, 24) and float(maps["attention"].max()) == pytest.approx(1.0)
    weights = maps["sliceattention"][:, 0, 0, :]  # (B, Z): one weight per axial slice, constant in the slice
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert torch.equal(maps["sliceattention"][:, 5, 7], weights)


def test_attention_needs_an_awarenet():
    network = build_network("sfcn", in_channels=1, outputs=1, options={"channels": [4, 8]})
    with pytest.raises(BrainlearnError, match="attention maps are AwareNet's own; this run's network is a"):
        attention_maps(network, torch.randn(1, 1, *SHAPE))
