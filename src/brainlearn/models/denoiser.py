"""The latent denoiser of Medical Diffusion (document 003): a video-diffusion U-Net applied to volumes.

Volumes are (B, C, X, Y, Z) with (X, Y) the axial plane and Z the slice axis, as the slices of a video are its
frames. Every convolution works in-plane (kernel 3×3×1) and down/upsampling halves/doubles X and Y only, so Z never
shrinks and needs no particular size. Each level: two residual blocks (GroupNorm, SiLU, conv, GroupNorm,
time-embedding scale-and-shift, SiLU, conv, plus the input) then spatial attention within each axial slice (linear
attention, as document 003's code, to stay cheap at the large levels) and depth attention along Z for each (x, y)
(full softmax attention with a learned relative-position bias). The bottleneck uses full spatial attention.
Skips are concatenated on the way up; a last convolution maps back to ``in_channels``: the predicted noise.

The scale-and-shift acts on the second GroupNorm's output (Dhariwal & Nichol 2021), where normalization cannot
undo it. Conditioning (new here; document 003 and its references are unconditional) is added to the time
embedding: a learned vector per diagnosis class with one more for "no label", and a sinusoidal embedding of the
age in years through an MLP with a learned "no age" vector; both "no" entries serve classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError


def in_plane_conv(c_in: int, c_out: int) -> nn.Conv3d:
    """A 3×3×1 convolution that keeps the size: it mixes neighbours within an axial slice only."""
    return nn.Conv3d(c_in, c_out, (3, 3, 1), padding=(1, 1, 0))


class ResidualBlock(nn.Module):
    """GroupNorm, SiLU, conv, GroupNorm, scale-and-shift by the embedding, SiLU, conv; plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, embed: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), in_plane_conv(c_in, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), in_plane_conv(c_out, c_out)
        self.embed = nn.Linear(embed, 2 * c_out)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(embedding))[:, :, None, None, None].chunk(2, dim=1)  # (B, C, 1, 1, 1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return h + self.skip(x)


class SpatialAttention(nn.Module):
    """Self-attention among the X·Y positions of each axial slice of (B, C, X, Y, Z), plus the input.

    ``linear``: linear attention (Shen et al. 2021: softmax of q over channels, of k over positions), linear in
    X·Y as in document 003's levels; otherwise full softmax attention through SDPA (the bottleneck).
    """

    def __init__(self, channels: int, *, heads: int, head_channels: int, groups: int, linear: bool) -> None:
        super().__init__()
        self.heads, self.head_channels, self.linear = heads, head_channels, linear
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv3d(channels, 3 * heads * head_channels, 1, bias=False)
        self.out = nn.Conv3d(heads * head_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, nx, ny, nz = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_channels, nx * ny, nz)
        q, k, v = qkv.permute(1, 0, 5, 2, 4, 3).reshape(3, b * nz, self.heads, nx * ny, -1).unbind(0)
        # q, k, v: (B·Z, heads, X·Y, head_channels)
        if self.linear:
            q = q.softmax(dim=-1) * self.head_channels**-0.5
            context = k.softmax(dim=-2).transpose(-1, -2) @ v  # (B·Z, heads, d, d)
            attended = q @ context
        else:
            attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.reshape(b, nz, self.heads, nx, ny, -1).permute(0, 2, 5, 3, 4, 1)  # (B, h, d, X, Y, Z)
        return x + self.out(attended.reshape(b, -1, nx, ny, nz))


class DepthAttention(nn.Module):
    """Softmax self-attention along Z for each in-plane position (x, y) of (B, C, X, Y, Z), plus the input.

    A learned bias per head and relative offset (clipped at ``max_distance`` slices) tells the slices apart, so any
    depth works; it starts at zero.
    """

    def __init__(self, channels: int, *, heads: int, head_channels: int, groups: int, max_distance: int = 32):
        super().__init__()
        self.heads, self.head_channels, self.max_distance = heads, head_channels, max_distance
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv3d(channels, 3 * heads * head_channels, 1, bias=False)
        self.out = nn.Conv3d(heads * head_channels, channels, 1)
        self.relative_bias = nn.Embedding(2 * max_distance + 1, heads)
        nn.init.zeros_(self.relative_bias.weight)

    def forward(self, x: Tensor) -> Tensor:
        b, _, nx, ny, nz = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_channels, nx, ny, nz)
        q, k, v = qkv.permute(1, 0, 4, 5, 2, 6, 3).reshape(3, b * nx * ny, self.heads, nz, -1).unbind(0)
        # q, k, v: (B·X·Y, heads, Z, head_channels)
        position = torch.arange(nz, device=x.device)
        offset = (position[None] - position[:, None]).clamp(-self.max_distance, self.max_distance)
        bias = self.relative_bias(offset + self.max_distance).permute(2, 0, 1).to(q.dtype)  # (heads, Z, Z)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        attended = attended.reshape(b, nx, ny, self.heads, nz, -1).permute(0, 3, 5, 1, 2, 4)  # (B, h, d, X, Y, Z)
        return x + self.out(attended.reshape(b, -1, nx, ny, nz))


class Level(nn.Module):
    """One resolution of the U-Net: two residual blocks, then spatial attention, then depth attention."""

    def __init__(
        self, c_in: int, c_out: int, *, embed: int, heads: int, head_channels: int, groups: int, linear: bool = True
    ) -> None:
        super().__init__()
        self.block1 = ResidualBlock(c_in, c_out, embed, groups)
        self.block2 = ResidualBlock(c_out, c_out, embed, groups)
        attention = {"heads": heads, "head_channels": head_channels, "groups": groups}
        self.spatial = SpatialAttention(c_out, linear=linear, **attention)
        self.depth = DepthAttention(c_out, **attention)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.depth(self.spatial(self.block2(self.block1(x, embedding), embedding)))


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style sin/cos features of ``values`` (B,) (timesteps or years) → (B, dim); ``dim`` even."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device) / half)
    angles = values.float()[:, None] * frequencies[None]  # (B, dim / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _embedding_mlp(channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, width), nn.GELU(), nn.Linear(width, width))


class Denoiser3D(nn.Module):
    """Predict the noise in a noisy latent (B, C, X, Y, Z) at diffusion step ``t``, optionally conditioned.

    Args:
        in_channels: latent channels (8 for document 003's VQ-GAN).
        channels: channels of the first level; level i has ``channels * multipliers[i]``.
        multipliers: one per level (document 003: 1, 2, 4, 8); X and Y must be divisible by 2**(levels − 1).
        heads, head_channels: attention heads and channels per head (8 × 32 in document 003).
        num_classes: diagnosis classes to condition on; 0 for no label input.
        age: whether to condition on age (years).
        groups: GroupNorm groups; must divide every level's channels.
    """

    def __init__(
        self,
        in_channels: int = 8,
        *,
        channels: int = 64,
        multipliers: Sequence[int] = (1, 2, 4, 8),
        heads: int = 8,
        head_channels: int = 32,
        num_classes: int = 0,
        age: bool = False,
        groups: int = 8,
    ) -> None:
        super().__init__()
        widths = [channels * m for m in multipliers]
        _check_settings(channels, widths, groups, num_classes)
        self.in_channels, self.num_classes, self.age = in_channels, num_classes, age
        self.multiple = 2 ** (len(widths) - 1)
        embed = 4 * channels
        self.channels = channels
        self.time_mlp = _embedding_mlp(channels, embed)
        self.label_embedding = nn.Embedding(num_classes + 1, embed) if num_classes else None  # last: no label
        self.age_mlp = _embedding_mlp(channels, embed) if age else None
        self.no_age = nn.Parameter(torch.randn(embed) * 0.02) if age else None
        level = partial(Level, embed=embed, heads=heads, head_channels=head_channels, groups=groups)
        self.stem = in_plane_conv(in_channels, channels)
        self.down = nn.ModuleList(
            level(c_in, c_out) for c_in, c_out in zip([channels, *widths[:-1]], widths, strict=True)
        )
        self.downsample = nn.ModuleList(
            nn.Conv3d(c, c, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0)) for c in widths[:-1]
        )
        top = widths[-1]
        self.middle = level(top, top, linear=False)
        self.up = nn.ModuleList(level(2 * c, c) for c in reversed(widths))
        self.upsample = nn.ModuleList(
            in_plane_conv(c_in, c_out) for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Sequential(nn.GroupNorm(groups, widths[0]), nn.SiLU(), in_plane_conv(widths[0], in_channels))

    def forward(self, x: Tensor, t: Tensor, label: Tensor | None = None, age: Tensor | None = None) -> Tensor:
        """The predicted noise, (B, C, X, Y, Z) like ``x``.

        Args:
            x: noisy latents (B, in_channels, X, Y, Z); X and Y divisible by :attr:`multiple`.
            t: diffusion steps (B,), integers in [0, T).
            label: (B,) long class indices in [0, num_classes), −1 for "no label"; None = no label for all.
            age: (B,) ages in years, NaN for "no age"; None = no age for all.
        """
        self._check_input(x, t, label, age)
        embedding = self.time_mlp(sinusoidal_embedding(t, self.channels)) + self._conditions(x, label, age)
        x = self.stem(x)
        skips = []
        for i, level in enumerate(self.down):
            x = level(x, embedding)
            skips.append(x)
            if i < len(self.downsample):
                x = self.downsample[i](x)  # (B, C, X/2, Y/2, Z)
        x = self.middle(x, embedding)
        for i, level in enumerate(self.up):
            x = level(torch.cat([x, skips.pop()], dim=1), embedding)
            if i < len(self.upsample):
                x = self.upsample[i](F.interpolate(x, scale_factor=(2.0, 2.0, 1.0), mode="nearest"))
        return self.head(x)

    def _conditions(self, x: Tensor, label: Tensor | None, age: Tensor | None) -> Tensor | float:
        """The summed label and age embeddings (B, 4·channels); 0 for an unconditional network."""
        out: Tensor | float = 0.0
        if self.label_embedding is not None:
            label = torch.full((len(x),), -1, device=x.device) if label is None else label
            out = out + self.label_embedding(torch.where(label < 0, self.num_classes, label))
        if self.age_mlp is not None:
            age = torch.full((len(x),), math.nan, device=x.device) if age is None else age.float()
            missing = age.isnan()[:, None]
            # NaN zeroed before the embedding so that no NaN reaches the gradient of the unused branch
            embedded = self.age_mlp(sinusoidal_embedding(age.nan_to_num(0.0), self.channels))
            out = out + torch.where(missing, self.no_age.to(embedded.dtype), embedded)
        return out

    def _check_input(self, x: Tensor, t: Tensor, label: Tensor | None, age: Tensor | None) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise BrainlearnError(
                f"Denoiser3D takes latents (B, {self.in_channels}, X, Y, Z), not shape {tuple(x.shape)}."
            )
        if x.shape[2] % self.multiple or x.shape[3] % self.multiple:
            raise BrainlearnError(
                f"Denoiser3D with {len(self.down)} levels needs the in-plane sizes X, Y of its (B, C, X, Y, Z) input "
                f"divisible by {self.multiple}, not shape {tuple(x.shape)}; pad or crop the latent, or use fewer "
                "multipliers."
            )
        if t.shape != (len(x),):
            raise BrainlearnError(f"Denoiser3D takes one diffusion step per latent ({len(x)},), not {tuple(t.shape)}.")
        _check_condition("label", label, len(x), enabled=self.num_classes > 0, hint="num_classes > 0")
        _check_condition("age", age, len(x), enabled=self.age, hint="age=True")
        if label is not None:
            _check_labels(label, self.num_classes)


def _check_condition(name: str, value: Tensor | None, batch: int, *, enabled: bool, hint: str) -> None:
    if value is None:
        return
    if not enabled:
        raise BrainlearnError(
            f"Denoiser3D: {name} was given, but the network was built without {name} conditioning; pass "
            f"{name}=None or build it with {hint}."
        )
    if value.shape != (batch,):
        raise BrainlearnError(
            f"Denoiser3D: {name} must have one value per latent ({batch},), not {tuple(value.shape)}."
        )


def _check_settings(channels: int, widths: list[int], groups: int, num_classes: int) -> None:
    if channels % 2 or not widths or min(widths) < 1:
        raise BrainlearnError(
            f"Denoiser3D: channels must be a positive even number and multipliers positive, got channels={channels} "
            f"and level widths {widths}."
        )
    if any(c % groups for c in [channels, *widths]):
        raise BrainlearnError(
            f"Denoiser3D: groups={groups} must divide channels={channels} and every level's channels {widths}."
        )
    if num_classes < 0:
        raise BrainlearnError(f"Denoiser3D: num_classes must be 0 (no label) or more, not {num_classes}.")


def _check_labels(label: Tensor, num_classes: int) -> None:
    """Labels in [0, num_classes) or −1. On a GPU the check runs on the device, asynchronously: reading the answer
    back would stall every denoiser call (250 per sampled volume)."""
    wrong = (label < -1) | (label >= num_classes)
    message = f"Denoiser3D: labels must lie in [0, {num_classes}) or be −1 (no label)"
    if label.device.type == "cuda":
        torch._assert_async(~wrong.any(), message)
    elif bool(wrong.any()):
        raise BrainlearnError(f"{message}, got {label.tolist()}.")
