"""The generative models' data path: prepared volumes, latents there and back, the cache grid; a tiny cache."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainlearn.data.cache import Cache, build_cache
from brainlearn.errors import BrainlearnError
from brainlearn.generation import (
    check_volume_size,
    decode_latents,
    encode_latents,
    from_model_space,
    grid_of,
    latent_scale,
    on_cache_grid,
    padding_slices,
    to_model_space,
    volumes,
)
from brainlearn.models.vqgan import VQGAN3D

SHAPE = (30, 36, 22)
AFFINE = np.array([[2.0, 0, 0, -30], [0, 2.0, 0, -40], [0, 0, 2.0, -20], [0, 0, 0, 1]])
SETTINGS = {"modalities": ["t1"], "downsample": 2, "multiple": 8}


def _cache(folder, shapes):
    rng = np.random.default_rng(0)
    rows = []
    for k, shape in enumerate(shapes):
        volume = np.zeros(shape, dtype=np.float32)
        volume[4:-4, 4:-4, 3:-3] = rng.uniform(100, 900, [n - 8 for n in shape[:2]] + [shape[2] - 6])
        path = folder / f"t1_{k}.nii.gz"
        nib.save(nib.Nifti1Image(volume, AFFINE), path)
        row = {"participant_id": f"sub-{k:02d}", "session_id": "ses-01", "t1": str(path), "age": 60.0 + k}
        rows.append(row | {"diagnosis": ("CN", "AD")[k % 2], "split": "train" if k < 4 else "val"})
    build_cache(pd.DataFrame(rows), folder / "cache", modalities=("t1",), progress=False)
    return Cache(folder / "cache")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return _cache(tmp_path_factory.mktemp("generation"), [SHAPE] * 6)


def test_volumes_are_in_range_downsampled_and_padded(cache):
    dataset = volumes(cache, SETTINGS, "train")
    image = dataset[0]["image"]
    assert image.shape == (1, 16, 24, 16)  # (15, 18, 11) after ×2 pooling, padded to multiples of 8
    assert image.min() == -1 and image.max() <= 1
    crop = (slice(None), *padding_slices({**SETTINGS, "shape": SHAPE}))
    assert (image[crop] > -1).any() and image[crop].shape == (1, 15, 18, 11)
    assert (image[..., :2] == -1).all()  # the padding is background


def test_a_prepared_volume_comes_back_on_the_cache_grid(cache):
    settings = SETTINGS | grid_of(cache, SETTINGS)
    assert settings["shape"] == list(SHAPE) and np.allclose(settings["affine"], AFFINE)
    image = volumes(cache, settings, "train")[0]["image"]
    back = on_cache_grid(image, settings)
    assert back.shape == (1, *SHAPE) and back.dtype == np.float32
    assert back.min() >= 0 and back.max() <= 1
    real = cache.read(0, "t1")
    assert back[0][real == 0].mean() < 0.2 and back[0][real > 0].mean() > 0.3  # tissue where the tissue was


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    return VQGAN3D(1, channels=4, downsample=4, embedding_dim=3, n_codes=16).eval()


def test_latents_come_with_labels_and_ages_and_mirror_images(cache, vqgan):
    latents = encode_latents(vqgan, volumes(cache, SETTINGS, "train", classes=("CN", "AD")), flips=True)
    assert len(latents) == 8  # 4 volumes and their mirror images
    assert latents[0]["latent"].shape == (3, 4, 6, 4) and {item["label"] for item in latents} == {0, 1}
    assert latents[1]["age"] == 61.0


def test_codebook_scaling_puts_every_code_in_range(cache, vqgan):
    scale = latent_scale("codebook", [])
    codes = vqgan.codebook.embeddings.T[None, :, :, None, None]  # (1, E, K, 1, 1)
    scaled = to_model_space(vqgan, codes, scale)
    assert scaled.min() >= -1 - 1e-5 and scaled.max() <= 1 + 1e-5
    assert torch.allclose(from_model_space(vqgan, scaled, scale), codes, atol=1e-5)


def test_standardized_latents_have_unit_variance_and_come_back(cache, vqgan):
    latents = encode_latents(vqgan, volumes(cache, SETTINGS, "train"))
    scale = latent_scale("standardize", latents)
    raw = torch.stack([item["latent"] for item in latents])
    scaled = to_model_space(vqgan, raw, scale)
    assert torch.allclose(scaled.mean(dim=(0, 2, 3, 4)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(scaled.std(dim=(0, 2, 3, 4)), torch.ones(3), atol=1e-4)
    assert torch.allclose(from_model_space(vqgan, scaled, scale), raw, atol=1e-5)
    with pytest.raises(BrainlearnError, match="latent_scale must be one of codebook, standardize, not 'minmax'"):
        latent_scale("minmax", latents)


def test_decoding_equals_the_vqgan_reconstruction(cache, vqgan):
    image = volumes(cache, SETTINGS, "train")[0]["image"][None]
    latents = encode_latents(vqgan, [{"image": image[0], "label": -1, "age": float("nan")}])
    for kind in ("codebook", "standardize"):
        scale = latent_scale(kind, latents * 2)
        decoded = decode_latents(vqgan, to_model_space(vqgan, latents[0]["latent"][None], scale), scale)
        with torch.no_grad():
            expected = vqgan(image)["reconstruction"].clamp(-1, 1)
        assert decoded.shape == (1, 1, 16, 24, 16) and torch.allclose(decoded, expected, atol=1e-4)


def test_sessions_on_different_grids_are_refused(tmp_path):
    cache = _cache(tmp_path, [SHAPE, SHAPE, (30, 36, 24), SHAPE, SHAPE, SHAPE])
    with pytest.raises(BrainlearnError, match="come in 2 shapes .* a generative model learns one grid"):
        volumes(cache, SETTINGS, "train")


def test_a_padding_the_models_cannot_halve_is_refused():
    with pytest.raises(BrainlearnError, match="need a multiple of 16. Use fewer denoiser multipliers"):
        check_volume_size({"compression": 4, "multiple": 8}, 3)
    check_volume_size({"compression": 4, "multiple": 16}, 3)
