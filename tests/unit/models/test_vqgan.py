"""The 3D VQ-GAN: the EMA codebook (update, commitment, restarts), shapes, latent normalization, discriminators."""

import pytest
import torch

from brainlearn.errors import BrainlearnError
from brainlearn.models.vqgan import VQGAN3D, Codebook, build_discriminators


def volumes(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def as_latent(vectors: list[list[float]]) -> torch.Tensor:
    """(N, E) vectors as a (1, E, N, 1, 1) latent."""
    return torch.tensor(vectors).T[None, :, :, None, None]


def known_codebook(**options) -> Codebook:
    """Two codes (0, 0) and (10, 10), each seen once, already initialized."""
    codebook = Codebook(2, 2, **options)
    codebook.embeddings.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    codebook.embedding_sum.copy_(codebook.embeddings)
    codebook.cluster_size.fill_(1.0)
    codebook.initialized.fill_(True)
    return codebook


def buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.named_buffers()}


def test_the_ema_update_matches_a_hand_computation():
    codebook = known_codebook(decay=0.5, restart_threshold=0.0, epsilon=1e-5).train()
    out = codebook(as_latent([[1.0, 0.0], [0.0, 1.0], [9.0, 10.0]]))
    assert out["indices"].flatten().tolist() == [0, 0, 1]
    # Code 0 gets two vectors summing to (1, 1), code 1 one vector (9, 10); the past weighs 0.5.
    cluster_size = [0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 1]
    embedding_sum = [[0.5 * 0 + 0.5 * 1, 0.5 * 0 + 0.5 * 1], [0.5 * 10 + 0.5 * 9, 0.5 * 10 + 0.5 * 10]]
    total, eps = sum(cluster_size), 1e-5
    smoothed = [(n + eps) / (total + 2 * eps) * total for n in cluster_size]
    embeddings = [[s / n for s in row] for row, n in zip(embedding_sum, smoothed, strict=True)]
    torch.testing.assert_close(codebook.cluster_size, torch.tensor(cluster_size), rtol=0, atol=0)
    torch.testing.assert_close(codebook.embedding_sum, torch.tensor(embedding_sum), rtol=0, atol=0)
    torch.testing.assert_close(codebook.embeddings, torch.tensor(embeddings), rtol=1e-7, atol=0)
    # The batch was quantized with the codes before the update.
    torch.testing.assert_close(out["quantized"], as_latent([[0.0, 0.0], [0.0, 0.0], [10.0, 10.0]]))


def test_commitment_loss_and_the_straight_through_gradient():
    codebook = known_codebook(commitment=0.25).eval()
    z = as_latent([[1.0, 2.0], [8.0, 9.0]]).requires_grad_(True)
    out = codebook(z)
    q = as_latent([[0.0, 0.0], [10.0, 10.0]])
    assert out["commitment_loss"].item() == pytest.approx(0.25 * ((z.detach() - q) ** 2).mean().item())
    out["quantized"].sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # straight through: dq/dz = 1
    z.grad = None
    out = codebook(z)
    out["commitment_loss"].backward()
    torch.testing.assert_close(z.grad, 2 * 0.25 * (z.detach() - q) / z.numel())
    assert not any(value.requires_grad for value in codebook.buffers()) and not list(codebook.parameters())


def test_eval_mode_leaves_the_codebook_unchanged():
    codebook = known_codebook().eval()
    before = buffers(codebook)
    codebook(as_latent([[1.0, 0.0], [50.0, 50.0]]))
    for name, value in codebook.named_buffers():
        assert torch.equal(value, before[name]), name


def test_the_first_training_batch_initializes_the_codes_from_encoder_vectors():
    codebook = Codebook(3, 2, decay=0.0, restart_threshold=0.0).train()
    vectors = [[1.0, 2.0], [30.0, 40.0], [-50.0, 60.0]]
    codebook(as_latent(vectors))
    # Three vectors for three codes: each code is one of them, wins only itself, and (decay 0) stays itself.
    assert bool(codebook.initialized)
    assert sorted(codebook.embedding_sum.tolist()) == sorted(vectors)
    torch.testing.assert_close(codebook.embeddings.sort(0).values, torch.tensor(vectors).sort(0).values)


def test_an_unused_code_restarts_as_an_encoder_vector_and_used_codes_are_kept():
    codebook = known_codebook(decay=0.5, restart_threshold=1.0).train()
    codebook.embeddings[1] = codebook.embedding_sum[1] = torch.tensor([1000.0, 1000.0])  # far from every vector
    vectors = [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]
    codebook(as_latent(vectors))
    # Code 0 took all three vectors: count 0.5 + 1.5, sum 0.5 · 0 + 0.5 · (3, 3); code 1's count 0.5 < 1.
    total = 2.0 + 1.0
    smoothed = (2.0 + 1e-5) / (total + 2e-5) * total
    torch.testing.assert_close(codebook.embeddings[0], torch.tensor([1.5, 1.5]) / smoothed)
    assert codebook.embeddings[1].tolist() in vectors
    assert codebook.embedding_sum[1].tolist() == codebook.embeddings[1].tolist()
    assert codebook.cluster_size.tolist() == [2.0, 1.0]


def test_perplexity_counts_the_codes_used_equally():
    codebook = known_codebook().eval()
    assert codebook(as_latent([[0.0, 0.0], [10.0, 10.0]]))["perplexity"].item() == pytest.approx(2.0)
    assert codebook(as_latent([[0.0, 0.0], [1.0, 1.0]]))["perplexity"].item() == pytest.approx(1.0)


def test_codebook_math_stays_float32_under_autocast():
    codebook = Codebook(8, 4).train()
    z = torch.randn(1, 4, 4, 6, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = codebook(z)
    assert all(value.dtype == torch.float32 for name, value in codebook.named_buffers() if name != "initialized")
    assert out["quantized"].dtype == torch.bfloat16 and out["commitment_loss"].dtype == torch.float32
    codebook.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices = codebook(z)["indices"]
    assert torch.equal(indices, codebook(z.float())["indices"])  # the distances were float32 under autocast too


def test_the_update_runs_in_a_one_process_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        codebook = known_codebook(decay=0.5, restart_threshold=1.0).train()
        codebook(as_latent([[1.0, 0.0], [0.0, 1.0]]))
        assert codebook.cluster_size.tolist() == [1.5, 1.0]  # code 1 restarted with count 1
    finally:
        torch.distributed.destroy_process_group()


def test_lookup_returns_the_codes_in_latent_layout():
    codebook = known_codebook()
    indices = torch.tensor([0, 1, 1, 0]).view(1, 4, 1, 1)
    assert torch.equal(codebook.lookup(indices), as_latent([[0.0, 0.0], [10.0, 10.0], [10.0, 10.0], [0.0, 0.0]]))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_codes": 0}, "n_codes must be a positive integer, not 0"),
        ({"decay": 1.0}, "decay must be in [0, 1)"),
        ({"commitment": -1}, "commitment must be non-negative"),
        ({"epsilon": 0}, "epsilon must be positive"),
    ],
)
def test_codebook_arguments_are_checked(options, message):
    with pytest.raises(BrainlearnError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Codebook(**({"n_codes": 4, "dim": 2} | options))


@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_shapes_on_a_non_cubic_volume(downsample):
    torch.manual_seed(0)
    vqgan = VQGAN3D(2, channels=4, downsample=downsample, embedding_dim=3, n_codes=16)
    x = volumes(2, 2, 16, 24, 8)
    latent = (2, 3, 16 // downsample, 24 // downsample, 8 // downsample)
    assert vqgan.encode(x).shape == latent
    out = vqgan(x)
    assert out["reconstruction"].shape == x.shape and out["indices"].shape == (latent[0], *latent[2:])
    assert out["indices"].dtype == torch.long and out["commitment_loss"].dim() == 0


def test_sizes_not_divisible_by_the_downsampling_are_refused_with_advice():
    vqgan = VQGAN3D(channels=4, downsample=4, embedding_dim=2, n_codes=8)
    with pytest.raises(BrainlearnError, match=r"divisible by 4, not \(16, 18, 16\); pad the volume .*pad_to_multiple"):
        vqgan(volumes(1, 1, 16, 18, 16))
    with pytest.raises(BrainlearnError, match=r"takes \(B, 1, X, Y, Z\) volumes, not shape \(1, 2, 16, 16, 16\)"):
        vqgan(volumes(1, 2, 16, 16, 16))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"downsample": 3}, "downsample must be a power of two"),
        ({"downsample": 0}, "downsample must be a power of two"),
        ({"channels": 0}, "channels must be a positive integer, not 0"),
        ({"embedding_dim": 2.5}, "embedding_dim must be a positive integer, not 2.5"),
    ],
)
def test_vqgan_arguments_are_checked(options, message):
    with pytest.raises(BrainlearnError, match=message):
        VQGAN3D(**options)


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    return VQGAN3D(channels=4, downsample=2, embedding_dim=4, n_codes=16)


def test_latent_normalization_round_trips_and_maps_the_codebook_to_minus_one_one(vqgan):
    low, high = vqgan.latent_range()
    assert (low, high) == (vqgan.codebook.embeddings.min().item(), vqgan.codebook.embeddings.max().item())
    codes = vqgan.normalize_latent(vqgan.codebook.embeddings)
    assert codes.min().item() == pytest.approx(-1) and codes.max().item() == pytest.approx(1)
    z = torch.randn(1, 4, 8, 12, 4)
    torch.testing.assert_close(vqgan.denormalize_latent(vqgan.normalize_latent(z)), z)


def test_decode_latent_snaps_to_the_codes_and_leaves_the_codebook_alone(vqgan):
    z_normalized = torch.rand(1, 4, 8, 12, 4) * 2 - 1
    with torch.no_grad():
        expected = vqgan.eval().decode(vqgan.quantize(vqgan.denormalize_latent(z_normalized))["quantized"])
    before = buffers(vqgan)
    decoded = vqgan.train().decode_latent(z_normalized)  # training mode must not update the codebook either
    vqgan.eval()
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=1e-5)
    assert decoded.shape == (1, 1, 16, 24, 8)
    assert all(torch.equal(value, before[name]) for name, value in vqgan.named_buffers())


def test_a_collapsed_codebook_cannot_normalize():
    vqgan = VQGAN3D(channels=4, downsample=1, embedding_dim=2, n_codes=4)
    vqgan.codebook.embeddings.fill_(0.5)
    with pytest.raises(BrainlearnError, match="every codebook entry equals 0.5.*train the VQ-GAN"):
        vqgan.normalize_latent(torch.zeros(1, 2, 2, 2, 2))


def test_discriminators_return_every_layer_and_take_a_single_volume():
    slice_discriminator, volume_discriminator = build_discriminators(2, channels=4, layers=2)
    x = volumes(1, 2, 16, 24, 16)
    slices, whole = slice_discriminator.train()(x[..., 5]), volume_discriminator.train()(x)
    assert [o.shape for o in slices] == [(1, 4, 8, 12), (1, 8, 4, 6), (1, 16, 3, 5), (1, 1, 2, 4)]
    assert whole[-1].shape == (1, 1, 2, 4, 2) and len(whole) == 4
    norms = [type(m).__name__ for m in volume_discriminator.modules() if "Norm" in type(m).__name__]
    assert norms == ["InstanceNorm3d", "InstanceNorm3d"]
    with pytest.raises(BrainlearnError, match="layers must be a positive integer, not 0"):
        build_discriminators(1, layers=0)
