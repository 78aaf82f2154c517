"""The 3D VQ-GAN of Medical Diffusion (document 003, Khader et al., Scientific Reports 2023): the autoencoder.

:class:`VQGAN3D` compresses a (B, C, X, Y, Z) volume ``downsample``-fold per axis into ``embedding_dim`` latent
channels, snaps every latent vector to the nearest of ``n_codes`` learned codes (:class:`Codebook`) and decodes the
result. The latent diffusion model of document 003 is trained on these latents, min-max normalized with the range
of the codebook (:meth:`VQGAN3D.normalize_latent`), and its samples go back through :meth:`VQGAN3D.decode_latent`.

The codebook is learned by exponential moving averages (van den Oord et al. 2017, appendix; no codebook gradient),
starts from encoder vectors of the first training batch and restarts codes that fall out of use with fresh encoder
vectors, as the public code of document 003 does; unlike that code, a restart also resets the code's running count
and sum, so the next average starts from the new vector instead of pulling it back to the dead one.

The two patch discriminators (:func:`build_discriminators`) judge axial slices (2D) and whole volumes (3D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import Tensor, nn
from torch import distributed as dist

from brainlearn.errors import BrainlearnError

# Rows of latent vectors compared with the whole codebook at once: 2**26 distances (256 MiB in float32) instead of
# one (N, K) matrix, which is 2 GiB for a 32³ latent and 16,384 codes.
DISTANCES_PER_CHUNK = 2**26


class Codebook(nn.Module):
    """Nearest-code quantization of (B, E, X, Y, Z) latents with an EMA-learned codebook of ``n_codes`` × ``dim``.

    Args:
        n_codes: codes K (16,384 in document 003).
        dim: length E of each code, the latent channels.
        decay: weight of the past in the moving averages, in [0, 1).
        commitment: weight β of the commitment loss β · mean((z − sg[q])²) (0.25).
        restart_threshold: codes whose moving-average usage (vectors per batch) falls below it are restarted.
        epsilon: Laplace smoothing of the usage counts, so an unused code never divides by zero.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        *,
        decay: float = 0.99,
        commitment: float = 0.25,
        restart_threshold: float = 1.0,
        epsilon: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, value in (("n_codes", n_codes), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise BrainlearnError(f"Codebook: {name} must be a positive integer, not {value!r}.")
        checks = (
            ("decay", decay, 0 <= decay < 1, "in [0, 1) (0.99 in document 003)"),
            ("commitment", commitment, commitment >= 0, "non-negative (0.25 in document 003)"),
            ("restart_threshold", restart_threshold, restart_threshold >= 0, "non-negative (0 never restarts)"),
            ("epsilon", epsilon, epsilon > 0, "positive (1e-5)"),
        )
        for name, value, ok, expected in checks:
            if not ok:
                raise BrainlearnError(f"Codebook: {name} must be {expected}, not {value!r}.")
        self.n_codes, self.dim = n_codes, dim
        self.decay, self.commitment = decay, commitment
        self.restart_threshold, self.epsilon = restart_threshold, epsilon
        embeddings = torch.randn(n_codes, dim)
        self.register_buffer("embeddings", embeddings)  # (K, E)
        self.register_buffer("cluster_size", torch.ones(n_codes))  # (K,) moving average of vectors per code
        self.register_buffer("embedding_sum", embeddings.clone())  # (K, E) moving average of their sums
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """Quantize ``z`` (B, E, X, Y, Z); in training mode also update the codebook from it.

        Returns:
            ``quantized`` (B, E, X, Y, Z), the nearest codes with the gradient passed straight through to ``z``;
            ``indices`` (B, X, Y, Z) long; ``commitment_loss`` (a float32 scalar); ``perplexity``, exp of the
            entropy of the codes' usage in this batch (1: one code used, K: all used equally).
        """
        with torch.autocast(z.device.type, enabled=False):  # distances and averages in float32 whatever the autocast
            flat = self._flat(z)
            if self.training and not self._initialized():
                self._initialize(flat)
            indices = self._nearest(flat)  # (N,)
            counts = torch.bincount(indices, minlength=self.n_codes).float()  # (K,)
            quantized = self.embeddings[indices]  # (N, E)
            if self.training:
                self._update(flat, indices, counts)
        quantized = quantized.view(*z.shape[:1], *z.shape[2:], self.dim).movedim(-1, 1)  # (B, E, X, Y, Z)
        probabilities = counts / counts.sum()
        return {
            "quantized": z + (quantized.to(z.dtype) - z).detach(),
            "indices": indices.view(z.shape[0], *z.shape[2:]),
            "commitment_loss": self.commitment * F.mse_loss(z.float(), quantized),
            "perplexity": torch.exp(-(probabilities * torch.log(probabilities + 1e-10)).sum()),
        }

    def nearest(self, z: Tensor) -> Tensor:
        """Indices (B, X, Y, Z) of the codes nearest to ``z`` (B, E, X, Y, Z); the codebook is left unchanged."""
        with torch.autocast(z.device.type, enabled=False):
            return self._nearest(self._flat(z)).view(z.shape[0], *z.shape[2:])

    def lookup(self, indices: Tensor) -> Tensor:
        """The codes (B, E, X, Y, Z) of ``indices`` (B, X, Y, Z)."""
        return self.embeddings[indices].movedim(-1, 1)

    def _flat(self, z: Tensor) -> Tensor:
        """The latent vectors of ``z`` (B, E, X, Y, Z) as float32 rows (N, E), N = B·X·Y·Z, without gradient."""
        return z.detach().float().movedim(1, -1).reshape(-1, self.dim)

    def _nearest(self, flat: Tensor) -> Tensor:
        rows = max(1, DISTANCES_PER_CHUNK // self.n_codes)
        squared = self.embeddings.pow(2).sum(1)  # (K,)
        # ‖z‖² is the same for every code, so argmin(‖e‖² − 2 z·e) is the nearest code.
        return torch.cat([(squared - 2 * chunk @ self.embeddings.T).argmin(1) for chunk in flat.split(rows)])

    def _initialized(self) -> bool:
        """Whether the codes were initialized; the buffer is read once (a host sync), then remembered."""
        if not getattr(self, "_known_initialized", False):
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._known_initialized = False  # read the loaded buffer again
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _initialize(self, flat: Tensor) -> None:
        """Every code becomes a random encoder vector of the first training batch (with usage 1)."""
        vectors = _broadcast(_random_rows(flat, self.n_codes))
        self.embeddings.copy_(vectors)
        self.embedding_sum.copy_(vectors)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """EMA of each code's usage and vector sum, code = sum / smoothed usage; then restart the unused codes."""
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, indices, flat)  # (K, E)
        counts = _all_reduce(counts.clone())
        sums = _all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.n_codes * self.epsilon) * total
        self.embeddings.copy_(self.embedding_sum / smoothed[:, None])
        # Restart the dead codes without asking how many there are (a host sync every step on a GPU): every code
        # gets a candidate, only the dead ones take it. Rank 0's candidates, so replicas stay identical.
        dead = (self.cluster_size < self.restart_threshold)[:, None]  # (K, 1)
        vectors = _broadcast(_random_rows(flat, self.n_codes))
        self.embeddings.copy_(torch.where(dead, vectors, self.embeddings))
        self.embedding_sum.copy_(torch.where(dead, vectors, self.embedding_sum))
        self.cluster_size.copy_(torch.where(dead[:, 0], torch.ones_like(self.cluster_size), self.cluster_size))


def _random_rows(flat: Tensor, n: int) -> Tensor:
    """``n`` random rows of ``flat`` (N, E): without replacement when there are enough, else with."""
    if len(flat) >= n:
        return flat[torch.randperm(len(flat), device=flat.device)[:n]]
    return flat[torch.randint(len(flat), (n,), device=flat.device)]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over all processes (itself outside distributed training)."""
    if _distributed():
        dist.all_reduce(tensor)
    return tensor


def _broadcast(tensor: Tensor) -> Tensor:
    """Rank 0's ``tensor`` on every process (itself outside distributed training)."""
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def _groups(channels: int, most: int = 32) -> int:
    """The most GroupNorm groups (at most ``most``, 32 as in document 003) that divide ``channels``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.GroupNorm(_groups(channels), channels), nn.SiLU()]


class ResidualBlock(nn.Module):
    """``x + f(x)`` with f = (GroupNorm, SiLU, 3×3×3 convolution) twice; the channels stay the same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_norm_act(channels),
            nn.Conv3d(channels, channels, 3, padding=1),
            *_norm_act(channels),
            nn.Conv3d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class VQGAN3D(nn.Module):
    """Encoder, codebook and decoder: (B, C, X, Y, Z) → latents (B, E, X/s, Y/s, Z/s) → (B, C, X, Y, Z).

    Encoder: a 3×3×3 convolution C → w; log2(s) stages of a stride-2 convolution (kernel 4) doubling the channels
    and a residual block; a residual block; GroupNorm, SiLU and a 1×1×1 convolution to E. The decoder mirrors it
    with transposed convolutions and ends in a linear 3×3×3 convolution to C (no tanh: the L1 loss against
    [-1, 1] images keeps it in range).

    Args:
        in_channels: image channels C.
        channels: channels w of the first level (16 in document 003); level k has 2^k · w.
        downsample: s, the size reduction per axis; a power of two (4 in document 003, 1 for none).
        embedding_dim: latent channels E (8).
        n_codes, decay, commitment, restart_threshold: of the :class:`Codebook` (16,384, 0.99, 0.25, 1).

    Every size X, Y, Z must be a multiple of ``downsample``; pad the volume first
    (:func:`brainlearn.data.loaders.pad_to_multiple`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        channels: int = 16,
        downsample: int = 4,
        embedding_dim: int = 8,
        n_codes: int = 16384,
        decay: float = 0.99,
        commitment: float = 0.25,
        restart_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("channels", channels), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or value < 1:
                raise BrainlearnError(f"VQGAN3D: {name} must be a positive integer, not {value!r}.")
        if not isinstance(downsample, int) or downsample < 1 or downsample & (downsample - 1):
            raise BrainlearnError(
                f"VQGAN3D: downsample must be a power of two (1, 2, 4, …; 4 in document 003), not {downsample!r}."
            )
        self.in_channels, self.downsample, self.embedding_dim = in_channels, downsample, embedding_dim
        widths = [channels * 2**k for k in range(int(math.log2(downsample)) + 1)]  # w, 2w, …, one per level
        encoder: list[nn.Module] = [nn.Conv3d(in_channels, channels, 3, padding=1)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [nn.Conv3d(c_in, c_out, 4, stride=2, padding=1), ResidualBlock(c_out)]
        encoder += [ResidualBlock(widths[-1]), *_norm_act(widths[-1]), nn.Conv3d(widths[-1], embedding_dim, 1)]
        decoder: list[nn.Module] = [nn.Conv3d(embedding_dim, widths[-1], 1), ResidualBlock(widths[-1])]
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            decoder += [nn.ConvTranspose3d(c_in, c_out, 4, stride=2, padding=1), ResidualBlock(c_out)]
        decoder += [*_norm_act(channels), nn.Conv3d(channels, in_channels, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)
        self.codebook = Codebook(
            n_codes, embedding_dim, decay=decay, commitment=commitment, restart_threshold=restart_threshold
        )

    def encode(self, x: Tensor) -> Tensor:
        """The unquantized latents (B, E, X/s, Y/s, Z/s) of ``x`` (B, C, X, Y, Z)."""
        self._check_input(x)
        return self.encoder(x)

    def quantize(self, z: Tensor) -> dict[str, Tensor]:
        """The codebook's output for latents ``z`` (see :meth:`Codebook.forward`); training mode updates it."""
        return self.codebook(z)

    def decode(self, quantized: Tensor) -> Tensor:
        """The volume (B, C, X, Y, Z) of quantized latents (B, E, X/s, Y/s, Z/s)."""
        return self.decoder(quantized)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Reconstruct ``x`` (B, C, X, Y, Z): ``reconstruction`` (its shape), ``commitment_loss``, ``perplexity``
        and ``indices`` (B, X/s, Y/s, Z/s)."""
        out = self.quantize(self.encode(x))
        return {
            "reconstruction": self.decode(out["quantized"]),
            "commitment_loss": out["commitment_loss"],
            "perplexity": out["perplexity"],
            "indices": out["indices"],
        }

    def latent_range(self) -> tuple[float, float]:
        """The smallest and largest value over all codebook entries, the range document 003 normalizes with."""
        embeddings = self.codebook.embeddings
        return float(embeddings.min()), float(embeddings.max())

    def normalize_latent(self, z: Tensor) -> Tensor:
        """Latents mapped linearly so that the codebook's range becomes [-1, 1]: 2 · (z − min) / (max − min) − 1."""
        low, high = self._checked_range()
        return 2 * (z - low) / (high - low) - 1

    def denormalize_latent(self, z: Tensor) -> Tensor:
        """The inverse of :meth:`normalize_latent`."""
        low, high = self._checked_range()
        return (z + 1) / 2 * (high - low) + low

    @torch.no_grad()
    def decode_latent(self, z_normalized: Tensor) -> Tensor:
        """Decode normalized latents (B, E, X/s, Y/s, Z/s), e.g. a diffusion sample: denormalize, snap each vector
        to its nearest code (never updating the codebook, in any mode) and decode to (B, C, X, Y, Z)."""
        codes = self.codebook.lookup(self.codebook.nearest(self.denormalize_latent(z_normalized)))
        return self.decode(codes.to(z_normalized.dtype))

    def _checked_range(self) -> tuple[float, float]:
        low, high = self.latent_range()
        if not high > low:
            raise BrainlearnError(
                f"VQGAN3D: every codebook entry equals {low}, so latents cannot be normalized by the codebook's "
                "range; train the VQ-GAN (or load its checkpoint) first."
            )
        return low, high

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise BrainlearnError(
                f"VQGAN3D takes (B, {self.in_channels}, X, Y, Z) volumes, not shape {tuple(x.shape)}; "
                f"build it with in_channels={x.shape[1] if x.dim() == 5 else '…'} or pass such volumes."
            )
        if any(n % self.downsample for n in x.shape[2:]):
            raise BrainlearnError(
                f"VQGAN3D with downsample {self.downsample} needs sizes divisible by {self.downsample}, not "
                f"{tuple(x.shape[2:])}; pad the volume (brainlearn.data.loaders.pad_to_multiple) or crop it."
            )


def build_discriminators(in_channels: int, *, channels: int = 64, layers: int = 3) -> tuple[nn.Module, nn.Module]:
    """The slice (2D) and volume (3D) patch discriminators of document 003 (64 channels, 3 layers).

    MONAI's :class:`~monai.networks.nets.PatchDiscriminator` (Pix2PixHD): kernel-4 convolutions, LeakyReLU(0.2),
    ``layers`` normalized layers with doubling channels. Called on (B, C, X, Y) or (B, C, X, Y, Z), each returns the
    list of every layer's output, the last being the patch logits; the others feed the feature-matching loss.

    Instance normalization replaces MONAI's default batch normalization: 3D batches are often a single volume, and
    batch statistics would differ between the separate real and fake passes, handing the discriminator a shortcut.
    Each axis needs at least 3 · 2^layers voxels (24 for 3 layers).

    Args:
        in_channels: image channels C.
        channels: channels of the first convolution.
        layers: normalized convolution layers (all but the last halve the size).

    Returns:
        ``(slice_discriminator, volume_discriminator)``.
    """
    for name, value in (("in_channels", in_channels), ("channels", channels), ("layers", layers)):
        if not isinstance(value, int) or value < 1:
            raise BrainlearnError(f"build_discriminators: {name} must be a positive integer, not {value!r}.")
    return tuple(
        PatchDiscriminator(dims, channels, in_channels, num_layers_d=layers, norm="INSTANCE") for dims in (2, 3)
    )
