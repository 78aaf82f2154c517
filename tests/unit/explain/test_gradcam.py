"""Grad-CAM and Grad-CAM++ put the importance where the output's evidence is, for 3D and slice-wise 2D networks."""

import pytest
import torch
from torch import nn

from brainlearn.errors import BrainlearnError
from brainlearn.explain.gradcam import GradCAM, candidate_layers, choose_layer
from brainlearn.models.networks import NETWORKS, build_network

SHAPE = (32, 40, 24)  # non-cubic: an axis swapped or flipped would put the map elsewhere
REGION = (slice(4, 12), slice(24, 36), slice(14, 22))  # the one region the output depends on (X, Y, Z)


def region_mask() -> torch.Tensor:
    mask = torch.zeros(SHAPE)
    mask[REGION] = 1
    return mask


class Toy3d(nn.Module):
    """Detect bright voxels (conv + ReLU) of REGION alone (the input is masked): class 1's logit is their mean."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, bias=False), nn.ReLU())
        self.register_buffer("mask", region_mask())

    def forward(self, x):
        evidence = self.features(x * self.mask).mean((1, 2, 3, 4))
        return torch.stack([-evidence, evidence], 1)


class ToySlices(nn.Module):
    """The same with 2D convolutions over the axial slices folded into the batch, as AwareNet does."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU())
        self.register_buffer("mask", region_mask())

    def forward(self, x):
        x = x * self.mask
        b, c, nx, ny, nz = x.shape
        maps = self.features(x.permute(0, 4, 1, 2, 3).reshape(b * nz, c, nx, ny))  # (B·Z, 4, X, Y)
        evidence = maps.mean((1, 2, 3)).view(b, nz).mean(1)
        return torch.stack([-evidence, evidence], 1)


def images(batch=2):
    torch.manual_seed(0)
    return torch.rand(batch, 1, *SHAPE) + 0.5  # bright everywhere: only the network's region decides


@pytest.mark.parametrize("toy", [Toy3d, ToySlices])
@pytest.mark.parametrize("plus", [False, True])
def test_gradcam_highlights_the_region_the_output_depends_on(toy, plus):
    torch.manual_seed(1)
    network = toy()
    with torch.no_grad():  # detectors of brightness: positive weights
        network.features[0].weight.abs_()
    maps = GradCAM(network, "features", plus=plus)(images(), target=1)
    assert maps.shape == (2, *SHAPE)
    assert float(maps.min()) >= 0 and float(maps.amax((1, 2, 3)).min()) == pytest.approx(1.0)
    inside, outside = region_mask().bool(), ~region_mask().bool()
    for volume in maps:
        assert float(volume[inside].mean()) > 0.5
        assert float(volume[outside].mean()) < 0.1
        peak = torch.nonzero(volume == volume.max())[0]
        assert all(s.start - 1 <= int(p) < s.stop + 1 for p, s in zip(peak, REGION, strict=True))


def test_gradcam_equals_monai_on_a_3d_network():
    from monai.visualize import GradCAM as MonaiGradCAM

    torch.manual_seed(0)
    network = build_network("sfcn", in_channels=1, outputs=2, options={"channels": [4, 8, 8, 8]}).eval()
    image = torch.randn(1, 1, *SHAPE)
    ours = GradCAM(network, "backbone.features.7")(image, target=1)
    reference = MonaiGradCAM(network, "backbone.features.7", postprocessing=lambda m: m)(image, class_idx=1)[:, 0]
    torch.testing.assert_close(ours, reference / reference.max(), atol=1e-5, rtol=1e-4)


def test_one_target_per_volume_and_the_predicted_class_by_default():
    network = Toy3d()
    with torch.no_grad():
        network.features[0].weight.abs_()
    x = images()
    predicted = GradCAM(network, "features")(x)  # the largest output: class 1 (evidence > 0)
    torch.testing.assert_close(predicted, GradCAM(network, "features")(x, target=[1, 1]))
    with pytest.raises(BrainlearnError, match="does not pick one of 2 outputs"):
        GradCAM(network, "features")(x, target=[0, 1, 1])


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_has_feature_layers_and_a_default_chosen_by_size(name):
    options = {
        "awarenet": {"width": 8},
        "resnet3d": {"widen_factor": 0.125},
        "densenet3d": {"init_features": 4, "growth_rate": 4, "block_config": [2, 2]},
        "resnet50_slices": {"slices": 4},
        "sfcn": {"channels": [4, 8, 8, 8, 8, 4]},
    }[name]
    network = build_network(name, in_channels=1, outputs=2, options=options)
    image = torch.randn(1, 1, 48, 56, 40)
    layer = choose_layer(network, image)
    assert layer in candidate_layers(network)
    maps = GradCAM(network, layer)(image, target=1)
    assert maps.shape == (1, 48, 56, 40) and torch.isfinite(maps).all()


def test_an_unknown_layer_names_the_close_ones():
    network = build_network("awarenet", in_channels=1, outputs=2, options={"width": 8})
    with pytest.raises(BrainlearnError, match="layer 'layer5' is not a module of AwareNet; did you mean"):
        GradCAM(network, "layer5")


def test_a_4d_input_is_refused():
    with pytest.raises(BrainlearnError, match=r"expected a batch \(B, C, X, Y, Z\)"):
        GradCAM(Toy3d(), "features")(torch.rand(1, *SHAPE))
