"""Augmentation keeps image and mask aligned: a known blob is moved and found in the same place in both."""

import pickle
from types import SimpleNamespace

import pytest
import torch

from brainlearn.data import augment
from brainlearn.data.augment import (
    Affine,
    BiasField,
    Blur,
    Compose,
    Displacement,
    Flip,
    Gamma,
    Ghosting,
    Noise,
    RandomAffine,
    RandomBiasField,
    RandomBlur,
    RandomElastic,
    RandomFlip,
    RandomGamma,
    RandomGhosting,
    RandomGridDistortion,
    RandomNoise,
    RandomRotate90,
    Rotate90,
    augmentation_2d,
    augmentation_3d,
    preset,
)
from brainlearn.errors import BrainlearnError

VOLUME, SLICE = (24, 32, 20), (32, 40)
CENTRES = {VOLUME: (9.0, 20.0, 8.0), SLICE: (12.0, 24.0)}

SPATIAL = {
    "flip": lambda seed, p=1.0: RandomFlip((0, 1), p=p, seed=seed),
    "rotate90": lambda seed, p=1.0: RandomRotate90((0, 1), p=p, seed=seed),
    "affine": lambda seed, p=1.0: RandomAffine(20.0, (0.8, 1.2), 0.1, p=p, seed=seed),
    "elastic": lambda seed, p=1.0: RandomElastic(5, 1.5, p=p, seed=seed),
    "grid": lambda seed, p=1.0: RandomGridDistortion(5, 0.3, p=p, seed=seed),
}
INTENSITY = {
    "gamma": lambda seed, p=1.0: RandomGamma(p=p, seed=seed),
    "noise": lambda seed, p=1.0: RandomNoise((0.05, 0.1), p=p, seed=seed),
    "blur": lambda seed, p=1.0: RandomBlur(p=p, seed=seed),
    "bias_field": lambda seed, p=1.0: RandomBiasField(p=p, seed=seed),
    "ghosting": lambda seed, p=1.0: RandomGhosting(p=p, seed=seed),
}
RANDOM = {**SPATIAL, **INTENSITY}


def _grid(shape):
    return torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")


def _ball(shape, centre, radius=4.5):
    return (sum((a - c) ** 2 for a, c in zip(_grid(shape), centre, strict=True)) <= radius**2).float()


def _blob_item(shape, channels=1):
    """A ball in every image channel (brightness 1, 2, ...) and the same ball as the mask."""
    ball = _ball(shape, CENTRES[shape])
    image = torch.stack([ball * (c + 1) for c in range(channels)])
    return {"image": image, "mask": ball[None].clone(), "participant_id": "sub-01"}


def _head_item(shape, channels=1):
    """A textured 'head' (non-zero inside an ellipsoid, 0 outside) with a ball as the mask."""
    generator = torch.Generator().manual_seed(0)
    radii = [n * 0.4 for n in shape]
    inside = sum(((a - (n - 1) / 2) / r) ** 2 for a, n, r in zip(_grid(shape), shape, radii, strict=True)) <= 1
    texture = torch.rand(channels, *shape, generator=generator) + 0.5
    return {"image": texture * inside, "mask": _ball(shape, CENTRES[shape])[None]}


def _centre_of_mass(x):
    weights = x[0].clamp_min(0)
    return torch.stack([(a * weights).sum() / weights.sum() for a in _grid(x.shape[1:])])


def _assert_aligned(out, shape):
    image, mask = out["image"], out["mask"]
    assert image.shape[1:] == mask.shape[1:] == shape and image.dtype == mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.sum() > 0.4 * _ball(shape, CENTRES[shape]).sum()  # the blob did not leave the field of view
    assert torch.dist(_centre_of_mass(image), _centre_of_mass(mask)) < 1.0
    seen = image[0] > 0.5
    dice = 2 * (seen & (mask[0] > 0)).sum() / (seen.sum() + mask[0].sum())
    assert dice > 0.85


@pytest.mark.parametrize("shape", [VOLUME, SLICE], ids=["3d", "2d"])
@pytest.mark.parametrize("name", SPATIAL)
def test_spatial_transforms_move_image_and_mask_together(name, shape):
    item = _blob_item(shape, channels=3 if len(shape) == 2 else 1)
    moved = False
    for seed in range(4):
        out = SPATIAL[name](seed)(item)
        _assert_aligned(out, shape)
        assert out["image"].shape == item["image"].shape and out["participant_id"] == "sub-01"
        moved |= torch.dist(_centre_of_mass(out["mask"]), _centre_of_mass(item["mask"])) > 0.5
    assert moved


@pytest.mark.parametrize("shape", [VOLUME, SLICE], ids=["3d", "2d"])
@pytest.mark.parametrize("make", [augmentation_2d, augmentation_3d], ids=["preset_2d", "preset_3d"])
def test_presets_keep_the_blob_in_the_same_place_in_image_and_mask(make, shape):
    if make is augmentation_3d:  # intensity steps change brightness: compare against a half-height threshold
        item = _blob_item(shape)
        for seed in range(4):
            out = make(seed=seed)(item)
            assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
            assert torch.dist(_centre_of_mass(out["image"] * (out["image"] > 0.5)), _centre_of_mass(out["mask"])) < 1
    else:
        for seed in range(4):
            _assert_aligned(make(seed=seed)(_blob_item(shape)), shape)


def test_flip_and_shift_move_the_blob_to_the_known_place():
    item = _blob_item(VOLUME)
    flipped = Flip((0,))(item)
    expected = torch.tensor([VOLUME[0] - 1 - CENTRES[VOLUME][0], 20.0, 8.0])
    for key in ("image", "mask"):
        assert torch.allclose(_centre_of_mass(flipped[key]), expected)
    shifted = Affine((0.0, 0.0, 0.0), 1.0, (3.0, -2.0, 1.0))(item)
    for key in ("image", "mask"):
        assert torch.allclose(_centre_of_mass(shifted[key]), torch.tensor([12.0, 18.0, 9.0]), atol=1e-3)


def test_affine_rotates_rigidly_in_voxels_on_a_non_square_slice():
    # A 90° turn about the centre keeps the blob's distance to the centre, whatever the aspect ratio.
    item, centre = _blob_item(SLICE), torch.tensor([15.5, 19.5])
    out = Affine((90.0,), 1.0, (0.0, 0.0))(item)
    before = torch.tensor(CENTRES[SLICE]) - centre
    after_image, after_mask = _centre_of_mass(out["image"]) - centre, _centre_of_mass(out["mask"]) - centre
    assert torch.allclose(after_image, torch.stack([-before[1], before[0]]), atol=0.05)
    assert torch.allclose(after_mask, after_image, atol=0.05)


def test_affine_quarter_turn_matches_rot90_and_scale_is_about_the_centre():
    square = {"image": _ball((32, 32), (8.0, 20.0))[None], "mask": _ball((32, 32), (8.0, 20.0))[None]}
    turned, rotated = Affine((90.0,), 1.0, (0.0, 0.0))(square), Rotate90(1, (0, 1))(square)
    assert torch.allclose(turned["image"], rotated["image"], atol=1e-4)
    assert torch.equal(turned["mask"], rotated["mask"])
    zoomed = Affine((0.0,), 1.5, (0.0, 0.0))(_blob_item(SLICE))
    expected = torch.tensor([15.5, 19.5]) + 1.5 * (torch.tensor(CENTRES[SLICE]) - torch.tensor([15.5, 19.5]))
    assert torch.dist(_centre_of_mass(zoomed["mask"]), expected) < 0.3


def test_rotate90_keeps_the_shape_of_non_square_planes():
    item = _blob_item(VOLUME)  # plane (0, 1) is 24 × 32: only 180° keeps the shape
    for seed in range(5):
        twin = RandomRotate90((0, 1), p=1.0, seed=seed).sample(VOLUME)
        assert twin == Rotate90(2, (0, 1))
    square = RandomRotate90((0, 1), p=1.0, seed=0)
    assert {square.sample((16, 16)).k for _ in range(20)} == {1, 2, 3}
    assert RandomRotate90(p=1.0, seed=0)(item)["image"].shape == item["image"].shape


@pytest.mark.parametrize("shape", [VOLUME, SLICE], ids=["3d", "2d"])
@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_transforms_change_the_image_only(name, shape):
    item = _head_item(shape, channels=2)
    out = INTENSITY[name](0)(item)
    assert out["mask"] is item["mask"] and torch.equal(out["mask"], _ball(shape, CENTRES[shape])[None])
    assert out["image"].shape == item["image"].shape and out["image"].dtype == torch.float32
    assert not torch.allclose(out["image"], item["image"]) and torch.isfinite(out["image"]).all()
    if name != "ghosting":  # ghosts reach the background, as on a scanner
        assert (out["image"][item["image"] == 0] == 0).all()


def test_gamma_keeps_each_channels_range():
    item = _head_item(VOLUME, channels=2)
    out = Gamma(2.0)(item)
    for before, after in zip(item["image"], out["image"], strict=True):
        inside = before != 0
        assert torch.isclose(after[inside].min(), before[inside].min())
        assert torch.isclose(after[inside].max(), before[inside].max())


def test_noise_is_relative_to_the_foreground_std():
    item = _head_item(VOLUME)
    item["image"] = item["image"] * 1000
    difference = Noise(0.1, seed=3)(item)["image"] - item["image"]
    inside = item["image"] != 0
    expected = 0.1 * item["image"][inside].std()
    assert abs(difference[inside].std() / expected - 1) < 0.05


def test_blur_keeps_a_constant_foreground_constant():
    item = {"image": 5 * (_head_item(SLICE)["image"] != 0).float()}
    out = Blur((2.0, 2.0))(item)["image"]
    assert torch.allclose(out[item["image"] != 0], torch.tensor(5.0))


def test_bias_field_is_smooth_and_multiplicative():
    item = {"image": torch.ones(1, *VOLUME)}
    coefficients = (0.0,) * 19 + (0.3,)  # only the highest-order term
    out = BiasField(coefficients, 3)(item)["image"][0]
    assert out.min() > 0 and out.max() / out.min() > 1.2
    assert (out.diff(dim=0).abs().max()) < 0.1  # smooth: small changes between neighbours


def test_ghosting_adds_shifted_copies_along_its_axis():
    image = torch.zeros(1, 32, 40)
    image[0, 14:18, 18:22] = 1.0
    out = Ghosting(num_ghosts=4, axis=0, intensity=1.0, restore=0.0)({"image": image})["image"][0]
    assert out[2:6, 18:22].abs().mean() > 0.1  # a ghost 32 / 4 = 8 lines away (twice, at ±8 and ±16)
    assert out[14:18, 2:6].abs().max() < 1e-5  # nothing along the other axis


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_output_and_other_seed_other_output(name):
    item = _head_item(SLICE, channels=2)

    def run(seed):
        transform = RANDOM[name](seed, p=0.5)  # p < 1 so the flips and the 180° turn depend on the seed too
        return [transform(item) for _ in range(5)]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", RANDOM)
def test_p_zero_is_the_identity(name):
    item = _head_item(SLICE)
    transform = RANDOM[name](0)
    transform.p = 0.0
    out = transform(item)
    assert out is not item and out["image"] is item["image"] and out["mask"] is item["mask"]


def test_presets_are_reproducible_and_listed():
    item = _head_item(VOLUME)
    a, b = preset("3d", seed=1)(item), preset("3d", seed=1)(item)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert preset("none")(item)["image"] is item["image"]
    assert [round(t.p, 2) for t in augmentation_3d().transforms] == [0.5, 0.5, 0.2, 0.25, 0.2, 0.3, 0.3]
    assert [round(t.p, 2) for t in augmentation_2d().transforms] == [0.5, 0.5, 0.5, 0.25, 0.25]


def test_each_dataloader_worker_draws_its_own_stream(monkeypatch):
    item = _head_item(SLICE)
    transform = RandomAffine(p=1.0, seed=0)
    main = transform.sample(SLICE)
    workers = []
    for worker_seed in (100, 101):
        monkeypatch.setattr(augment, "get_worker_info", lambda s=worker_seed: SimpleNamespace(seed=s))
        copy = pickle.loads(pickle.dumps(transform))  # what a worker receives
        workers.append(copy.sample(SLICE))
    assert len({repr(main), *map(repr, workers)}) == 3
    assert pickle.loads(pickle.dumps(augmentation_2d(seed=0)))(item)["image"].shape == item["image"].shape


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RandomFlip((3,)), "axes must be distinct spatial axes among 0, 1, 2"),
        (lambda: RandomFlip((0, 0)), "axes must be distinct spatial axes"),
        (lambda: RandomRotate90((0,)), "plane must be 2 distinct spatial axes"),
        (lambda: RandomAffine(degrees=200), "degrees must be a number in [0, 180], not 200"),
        (lambda: RandomAffine(scale=(1.2, 0.8)), "scale must be a pair (a, b) with 0.01 <= a <= b"),
        (lambda: RandomAffine(shift=-0.1), "shift must be a number in [0, 0.5], not -0.1"),
        (lambda: RandomElastic(control_points=1), "control_points must be an integer >= 2, not 1"),
        (lambda: RandomGridDistortion(distort=0.6), "distort must be a number in [0, 0.49], not 0.6"),
        (lambda: RandomGamma(log_gamma=0.3), "log_gamma must be a pair (a, b)"),
        (lambda: RandomNoise(std=(-1, 0)), "std must be a pair (a, b) with 0 <= a <= b <= 10"),
        (lambda: RandomBiasField(order=2.5), "order must be an integer in [0, 6], not 2.5"),
        (lambda: RandomGhosting(num_ghosts=(2.5, 4)), "num_ghosts must be a pair of integers"),
        (lambda: RandomGamma(p=1.5), "p must be a probability in [0, 1], not 1.5"),
        (lambda: RandomBlur(seed="a"), "seed must be an integer >= 0 or None, not 'a'"),
        (lambda: Compose([RandomFlip(), 3]), "transforms must be callables on item dicts, not 3 at 1"),
        (lambda: preset("3D"), "unknown preset '3D'. Did you mean '3d'? Known presets: 2d, 3d, none"),
    ],
)
def test_bad_arguments_say_what_was_expected(make, message):
    with pytest.raises(BrainlearnError) as error:
        make()
    assert message in str(error.value)


def test_bad_items_say_what_was_expected():
    with pytest.raises(BrainlearnError, match=r"item\['image'\] must be a tensor \(C, H, W\) or \(C, X, Y, Z\)"):
        RandomFlip()({"image": torch.zeros(32, 40)})
    with pytest.raises(BrainlearnError, match=r"item\['mask'\] must have shape \(1, 32, 40\) like the image"):
        RandomFlip()({"image": torch.zeros(1, 32, 40), "mask": torch.zeros(1, 32, 41)})
    with pytest.raises(BrainlearnError, match=r"axes \(2,\) do not exist in a 2D item"):
        RandomFlip((2,), p=1.0)({"image": torch.zeros(1, 32, 40)})
    with pytest.raises(BrainlearnError, match="does not fit an item"):
        Displacement(torch.zeros(2, 8, 8))({"image": torch.zeros(1, 32, 40)})
