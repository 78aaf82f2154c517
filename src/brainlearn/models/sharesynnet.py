"""ShareSynNet: one 3D generator for MRI→PET and PET→MRI, switched by AdaIN (document 000, MedIA 2024).

A 3D U-Net. Encoder: four stride-2 3×3×3 convolutions 1→w→4w→8w→16w (w = 32 in the paper: 32, 128, 256, 512),
each followed by InstanceNorm, AdaIN and LeakyReLU(0.2). Bottleneck: 8-head self-attention with cosine-normalized
queries and keys and a residual, then a stride-1 convolution 16w→16w (IN, AdaIN, LeakyReLU). Decoder: a transposed
convolution (kernel 4, stride 2) up, the encoder's skip concatenated, a 3×3×3 convolution, IN, AdaIN, LeakyReLU:
16w→8w→4w→w; a last transposed convolution w→4 back to the input size and a convolution 4→1 with tanh.

AdaIN: a shared MLP (1024→512, then three 512→512, LeakyReLU) maps a constant input to a code; each normalized
layer maps the code to a per-channel mean and a non-negative scale, and ``out = α·(scale·x + mean) + (1−α)·x``.
α = 0 is MRI→PET (the AdaIN path is the identity), α = 1 is PET→MRI.

Choices where the description leaves room (written down so they can be checked):

- The scale is made non-negative with softplus (ReLU could stick at zero).
- The attention's logits are ``s · cos(q, k)`` with a learnable temperature ``s`` per head, started at 10 and
  kept at most 100 (cosine logits in [-1, 1] alone would give an almost uniform softmax). It runs through
  :func:`torch.nn.functional.scaled_dot_product_attention`, so a GPU uses its fused (flash) kernels.
- The last transposed convolution is followed by LeakyReLU before the 4→1 convolution.
- Kaiming-normal initialization (fan_in, LeakyReLU 0.2) of every convolution and linear layer, zero biases.

The discriminator (:class:`ShareDiscriminator`): convolutions with kernel 4 and stride 2 from 1→w, then
w→4w→8w→16w→16w, one stride-1 convolution 16w→16w (kernel 3), InstanceNorm (not after the first) and
LeakyReLU(0.2), and a 1-channel output convolution (kernel 3): a patch map of real/fake scores for the
least-squares GAN loss. Five stride-2 steps divide the size by 32; ``downsamples`` lowers that for small volumes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

MRI_TO_PET = 0.0
PET_TO_MRI = 1.0
CODE_INPUT, CODE_FEATURES = 1024, 512
HEADS = 8


def init_kaiming_leaky(module: nn.Module, slope: float = 0.2) -> nn.Module:
    """Kaiming-normal (fan_in, LeakyReLU ``slope``) weights and zero biases for every conv and linear layer."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


class AdaINCode(nn.Module):
    """The shared mapping MLP: a constant input (1024 ones) → the style code (1, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("constant", torch.ones(1, CODE_INPUT), persistent=False)
        layers: list[nn.Module] = [nn.Linear(CODE_INPUT, CODE_FEATURES), nn.LeakyReLU(0.2)]
        for _ in range(3):
            layers += [nn.Linear(CODE_FEATURES, CODE_FEATURES), nn.LeakyReLU(0.2)]
        self.mlp = nn.Sequential(*layers)

    def forward(self) -> Tensor:
        return self.mlp(self.constant)  # (1, 512)


class AdaIN(nn.Module):
    """``α·(scale·x + mean) + (1−α)·x`` with per-channel mean and scale ≥ 0 read from the code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.affine = nn.Linear(CODE_FEATURES, 2 * channels)

    def forward(self, x: Tensor, code: Tensor, alpha: Tensor) -> Tensor:
        mean, scale = self.affine(code).chunk(2, dim=1)  # (1, C) each
        shape = (1, -1) + (1,) * (x.dim() - 2)
        styled = F.softplus(scale).view(shape) * x + mean.view(shape)
        return alpha * styled + (1 - alpha) * x


class NormAct(nn.Module):
    """InstanceNorm, AdaIN, LeakyReLU(0.2): what follows every convolution of the encoder and decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm3d(channels)
        self.adain = AdaIN(channels)

    def forward(self, x: Tensor, code: Tensor, alpha: Tensor) -> Tensor:
        return F.leaky_relu(self.adain(self.norm(x), code, alpha), 0.2)


class CosineSelfAttention(nn.Module):
    """Multi-head self-attention over the voxels of (B, C, X, Y, Z), cosine-normalized q and k, plus the input."""

    def __init__(self, channels: int, heads: int = HEADS) -> None:
        super().__init__()
        if channels % heads:
            raise BrainlearnError(f"attention: {channels} channels do not split into {heads} heads.")
        self.heads = heads
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.out = nn.Conv3d(channels, channels, 1)
        self.log_scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, -1).transpose(-1, -2).unbind(1)
        # q, k, v: (B, heads, N voxels, C / heads)
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        q = F.normalize(q, dim=-1) * scale.to(q.dtype)
        attended = F.scaled_dot_product_attention(q, F.normalize(k, dim=-1), v, scale=1.0)
        attended = attended.transpose(-1, -2).reshape(b, c, *spatial)  # (B, C, X, Y, Z)
        return x + self.out(attended)


class ShareSynNet(nn.Module):
    """The shared generator: (B, 1, X, Y, Z) in [-1, 1] → (B, 1, X, Y, Z) in [-1, 1], direction by ``alpha``.

    Args:
        width: channels of the first level; the levels are (w, 4w, 8w, 16w). 32 is the paper's network.
        heads: heads of the bottleneck attention (8 in the paper); must divide 16w.

    Every size X, Y, Z must be a multiple of 16 (four halvings); pad the volume first
    (:func:`brainlearn.data.loaders.pad_to_multiple`).
    """

    multiple = 16

    def __init__(self, *, width: int = 32, heads: int = HEADS) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise BrainlearnError(f"width must be a positive integer (32 is the paper's), not {width!r}.")
        c1, c2, c3, c4 = width, 4 * width, 8 * width, 16 * width
        self.width = width
        self.code = AdaINCode()
        self.down = nn.ModuleList(
            nn.Conv3d(i, o, 3, stride=2, padding=1) for i, o in ((1, c1), (c1, c2), (c2, c3), (c3, c4))
        )
        self.down_norm = nn.ModuleList(NormAct(c) for c in (c1, c2, c3, c4))
        self.attention = CosineSelfAttention(c4, heads)
        self.bottleneck = nn.Conv3d(c4, c4, 3, padding=1)
        self.bottleneck_norm = NormAct(c4)
        levels = ((c4, c3), (c3, c2), (c2, c1))
        self.up = nn.ModuleList(nn.ConvTranspose3d(i, o, 4, stride=2, padding=1) for i, o in levels)
        self.merge = nn.ModuleList(nn.Conv3d(2 * o, o, 3, padding=1) for _, o in levels)
        self.merge_norm = nn.ModuleList(NormAct(o) for _, o in levels)
        self.last_up = nn.ConvTranspose3d(c1, 4, 4, stride=2, padding=1)
        self.last = nn.Conv3d(4, 1, 3, padding=1)
        init_kaiming_leaky(self)

    def forward(self, x: Tensor, alpha: float | Tensor = MRI_TO_PET) -> Tensor:
        """Translate ``x`` (B, 1, X, Y, Z); ``alpha`` 0 (MRI→PET), 1 (PET→MRI), a float or a (B,) tensor."""
        check_generator_input(x, self.multiple)
        alpha = _alpha(alpha, x)
        code = self.code()
        skips = []
        for conv, norm in zip(self.down, self.down_norm, strict=True):
            x = norm(conv(x), code, alpha)
            skips.append(x)
        x = self.bottleneck_norm(self.bottleneck(self.attention(x)), code, alpha)  # (B, 16w, X/16, Y/16, Z/16)
        for up, merge, norm, skip in zip(self.up, self.merge, self.merge_norm, reversed(skips[:-1]), strict=True):
            x = norm(merge(torch.cat([up(x), skip], dim=1)), code, alpha)
        return torch.tanh(self.last(F.leaky_relu(self.last_up(x), 0.2)))


def check_generator_input(x: Tensor, multiple: int) -> None:
    """Raise a BrainlearnError unless ``x`` is (B, 1, X, Y, Z) with sizes divisible by ``multiple``."""
    if x.dim() != 5 or x.shape[1] != 1:
        raise BrainlearnError(f"ShareSynNet takes (B, 1, X, Y, Z) volumes, not shape {tuple(x.shape)}.")
    if any(n % multiple for n in x.shape[2:]):
        raise BrainlearnError(
            f"ShareSynNet needs sizes divisible by {multiple}, not {tuple(x.shape[2:])}; pad the volume "
            "(brainlearn.data.loaders.pad_to_multiple) or crop to such a size."
        )


def _alpha(alpha: float | Tensor, x: Tensor) -> Tensor:
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    if alpha.dim() == 0:
        return alpha
    if alpha.shape != (x.shape[0],):
        raise BrainlearnError(f"alpha must be a number or one per volume ({x.shape[0]},), not {tuple(alpha.shape)}.")
    return alpha.view(-1, 1, 1, 1, 1)


class ShareDiscriminator(nn.Module):
    """The 3D patch discriminator of document 000: (B, 1, X, Y, Z) → real/fake scores (B, 1, x, y, z).

    Args:
        width: channels of the first convolution; the others are 4w, 8w, 16w, 16w (w = 32 in the paper).
        downsamples: stride-2 convolutions (5 in the paper, for 128³–256³ inputs); each needs its input at least
            2 voxels wide per axis after it, so 64³ crops take at most 4 and 32³ crops at most 3.
    """

    def __init__(self, *, width: int = 32, downsamples: int = 5) -> None:
        super().__init__()
        if not isinstance(downsamples, int) or not 1 <= downsamples <= 5:
            raise BrainlearnError(f"downsamples must be an integer from 1 to 5 (5 in the paper), not {downsamples!r}.")
        channels = [1, width, 4 * width, 8 * width, 16 * width, 16 * width][: downsamples + 1]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            layers.append(nn.Conv3d(c_in, c_out, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm3d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        last = channels[-1]
        layers += [nn.Conv3d(last, last, 3, padding=1), nn.InstanceNorm3d(last), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv3d(last, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)
        self.downsamples = downsamples
        init_kaiming_leaky(self)

    def forward(self, x: Tensor) -> Tensor:
        smallest = 2**self.downsamples
        if x.dim() != 5 or min(x.shape[2:]) < 2 * smallest:
            raise BrainlearnError(
                f"the discriminator with {self.downsamples} stride-2 steps needs (B, 1, X, Y, Z) of at least "
                f"{2 * smallest} voxels per axis, not {tuple(x.shape)}; lower model_options.downsamples."
            )
        return self.layers(x)
