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

How it is computed (``fused=True``, the default; ``fused=False`` keeps the step-by-step computation as the
reference, and both give the same result up to rounding):

- InstanceNorm and AdaIN are one per-channel affine map ``x·A + B`` applied in one pass after one pass of
  statistics (float32 under autocast), then an in-place LeakyReLU, with an analytic backward pass that keeps only
  the input (:func:`fused_norm_act`).
- The AdaIN code and each layer's (mean, scale) do not depend on the input: they are computed once per
  forward pass, outside autocast; without autograd they are cached until a parameter of the code MLP or the
  affines changes (in place, by a move to another device or dtype, or by an optimizer step, which follows a
  pass with autograd). ``alpha`` given as the number 0 skips them: the AdaIN is the identity.
- ``checkpointing=True`` recomputes each encoder level, the bottleneck, each decoder level and the output
  level in the backward pass instead of keeping their activations (:func:`torch.utils.checkpoint.checkpoint`):
  less memory for whole 256³ volumes, about one more forward pass of time.

The discriminator (:class:`ShareDiscriminator`): convolutions with kernel 4 and stride 2 from 1→w, then
w→4w→8w→16w→16w, one stride-1 convolution 16w→16w (kernel 3), InstanceNorm (not after the first) and
LeakyReLU(0.2), and a 1-channel output convolution (kernel 3): a patch map of real/fake scores for the
least-squares GAN loss. Five stride-2 steps divide the size by 32; ``downsamples`` lowers that for small volumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from brainlearn.errors import BrainlearnError

MRI_TO_PET = 0.0
PET_TO_MRI = 1.0
CODE_INPUT, CODE_FEATURES = 1024, 512
HEADS = 8
NORM_EPS = 1e-5  # nn.InstanceNorm3d's

Style = tuple[Tensor, Tensor] | None
"""One layer's AdaIN (mean, scale ≥ 0), (1, C) each; None where the AdaIN is the identity (α = 0)."""


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

    def style(self, code: Tensor) -> tuple[Tensor, Tensor]:
        """The per-channel (mean, scale), (1, C) each, of the code (1, 512)."""
        mean, scale = self.affine(code).chunk(2, dim=1)
        return mean, F.softplus(scale)

    def forward(self, x: Tensor, code: Tensor, alpha: Tensor) -> Tensor:
        return stylize(x, self.style(code), alpha)


def stylize(x: Tensor, style: Style, alpha: Tensor) -> Tensor:
    """The AdaIN of (B, C, ...) ``x`` one operation at a time: ``α·(scale·x + mean) + (1−α)·x``."""
    if style is None:
        return x
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, scale = style
    styled = scale.view(shape) * x + mean.view(shape)
    return alpha * styled + (1 - alpha) * x


def fused_norm_act(x: Tensor, style: Style, alpha: Tensor) -> Tensor:
    """InstanceNorm, AdaIN and LeakyReLU(0.2) of (B, C, X, Y, Z) ``x`` in three passes over the volume (statistics,
    affine map, in-place activation), where one operation at a time takes eight; the backward pass keeps only ``x``.

    With per-(volume, channel) ``mean`` and ``rstd = 1/√(var + eps)`` and ``x̂ = (x − mean)·rstd``, norm and AdaIN
    are ``α·(s·x̂ + m) + (1−α)·x̂ = a·x̂ + b`` with ``a = 1 + α·(s − 1)`` and ``b = α·m``: one affine map of ``x``
    (:class:`_NormAffineAct`). ``a`` and ``b`` are tiny (B or 1, C) tensors computed in float32 with autograd, so
    gradients reach α, the code and the affines as before.
    """
    channels, dtype = x.shape[1], _statistics_dtype(x)
    if style is None:
        gain = x.new_ones((1, channels, 1, 1, 1), dtype=dtype)
        shift = x.new_zeros((1, channels, 1, 1, 1), dtype=dtype)
    else:
        mean, scale = (part.to(dtype).view(1, -1, 1, 1, 1) for part in style)
        alpha = alpha.to(dtype)
        gain, shift = 1 + alpha * (scale - 1), alpha * mean  # (B or 1, C, 1, 1, 1)
    return _NormAffineAct.apply(x, gain, shift)


class _NormAffineAct(torch.autograd.Function):
    """``leaky_relu(a·x̂ + b, 0.2)`` with ``x̂`` the instance-normalized ``x``, and its analytic backward.

    Autograd through the composed operations would keep a float32 copy of ``x`` (bf16 under autocast) and every
    intermediate; this keeps ``x`` itself and per-channel statistics, and recomputes ``x̂`` in the backward pass.
    The statistics are float32 (float64 for float64 ``x``); the output has ``x``'s dtype.
    """

    @staticmethod
    def forward(ctx, x: Tensor, gain: Tensor, shift: Tensor) -> Tensor:
        high = x.to(_statistics_dtype(x))
        var, mean = torch.var_mean(high, dim=(2, 3, 4), correction=0, keepdim=True)  # (B, C, 1, 1, 1) each
        del high
        rstd = torch.rsqrt(var + NORM_EPS)
        scale = gain * rstd
        y = torch.addcmul((shift - scale * mean).to(x.dtype), x, scale.to(x.dtype))
        ctx.save_for_backward(x, gain, shift, mean, rstd)
        return F.leaky_relu_(y, 0.2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, gain, shift, mean, rstd = ctx.saved_tensors
        spatial = (2, 3, 4)
        dtype = _statistics_dtype(x)
        normalized = (x.to(dtype) - mean) * rstd  # x̂
        slope = torch.where(gain * normalized + shift > 0, 1.0, 0.2)
        grad_affine = grad.to(dtype) * slope  # d loss / d (a·x̂ + b)
        grad_gain = _sum_to((grad_affine * normalized).sum(spatial, keepdim=True), gain.shape)
        grad_shift = _sum_to(grad_affine.sum(spatial, keepdim=True), shift.shape)
        grad_normalized = grad_affine * gain
        grad_x = rstd * (
            grad_normalized
            - grad_normalized.mean(spatial, keepdim=True)
            - normalized * (grad_normalized * normalized).mean(spatial, keepdim=True)
        )
        return grad_x.to(x.dtype), grad_gain, grad_shift


def _statistics_dtype(x: Tensor) -> torch.dtype:
    """float32 for bf16, fp16 and float32 inputs; float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _sum_to(gradient: Tensor, shape: torch.Size) -> Tensor:
    """``gradient`` (B, C, 1, 1, 1) summed over the batch when the parameter was shared by all volumes (1, C, ...)."""
    return gradient.sum(0, keepdim=True) if shape[0] == 1 and gradient.shape[0] != 1 else gradient


class NormAct(nn.Module):
    """InstanceNorm, AdaIN, LeakyReLU(0.2): what follows every convolution of the encoder and decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm3d(channels)
        self.adain = AdaIN(channels)

    def forward(self, x: Tensor, style: Style, alpha: Tensor, *, fused: bool = True) -> Tensor:
        """Normalize, style and activate ``x`` (B, C, X, Y, Z); ``style`` from ``self.adain.style(code)``.

        Args:
            fused: one affine map (:func:`fused_norm_act`) rather than one operation at a time; the same result.
        """
        if fused:
            return fused_norm_act(x, style, alpha)
        return F.leaky_relu(stylize(self.norm(x), style, alpha), 0.2)


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
        fused: the fast computation (see the module docstring); False computes one operation at a time, as the
            reference for benchmarks and tests. The attribute ``fused`` can be changed later; the weights are
            the same either way.
        checkpointing: in training, recompute each level in the backward pass instead of storing its
            activations (for whole 256³ volumes on a small GPU); the same result, more time.

    Every size X, Y, Z must be a multiple of 16 (four halvings); pad the volume first
    (:func:`brainlearn.data.loaders.pad_to_multiple`).
    """

    multiple = 16

    def __init__(self, *, width: int = 32, heads: int = HEADS, fused: bool = True, checkpointing: bool = False) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise BrainlearnError(f"width must be a positive integer (32 is the paper's), not {width!r}.")
        for name, flag in (("fused", fused), ("checkpointing", checkpointing)):
            if not isinstance(flag, bool):
                raise BrainlearnError(f"{name} must be true or false, not {flag!r}.")
        c1, c2, c3, c4 = width, 4 * width, 8 * width, 16 * width
        self.width, self.fused, self.checkpointing = width, fused, checkpointing
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
        self._style_cache: tuple[tuple, list[Style]] | None = None  # (parameter versions, styles)

    def forward(self, x: Tensor, alpha: float | Tensor = MRI_TO_PET) -> Tensor:
        """Translate ``x`` (B, 1, X, Y, Z); ``alpha`` 0 (MRI→PET), 1 (PET→MRI), a float or a (B,) tensor."""
        check_generator_input(x, self.multiple)
        styles = self._styles(identity=self.fused and isinstance(alpha, int | float) and alpha == 0)
        down, bottom, up = styles[:4], styles[4], styles[5:]  # one per NormAct, in the order of _norm_acts
        alpha = _alpha(alpha, x)
        skips = []
        for level in range(4):
            x = self._segment(self._encode, level, x, down[level], alpha)
            skips.append(x)
        x = self._segment(self._bottom, x, bottom, alpha)  # (B, 16w, X/16, Y/16, Z/16)
        for level, skip in enumerate(reversed(skips[:-1])):
            x = self._segment(self._decode, level, x, skip, up[level], alpha)
        return self._segment(self._output, x)

    def _encode(self, level: int, x: Tensor, style: Style, alpha: Tensor) -> Tensor:
        return self.down_norm[level](self.down[level](x), style, alpha, fused=self.fused)

    def _bottom(self, x: Tensor, style: Style, alpha: Tensor) -> Tensor:
        return self.bottleneck_norm(self.bottleneck(self.attention(x)), style, alpha, fused=self.fused)

    def _decode(self, level: int, x: Tensor, skip: Tensor, style: Style, alpha: Tensor) -> Tensor:
        merged = self.merge[level](torch.cat([self.up[level](x), skip], dim=1))
        return self.merge_norm[level](merged, style, alpha, fused=self.fused)

    def _output(self, x: Tensor) -> Tensor:
        return torch.tanh(self.last(F.leaky_relu(self.last_up(x), 0.2)))

    def _segment(self, function: Callable[..., Tensor], *args) -> Tensor:
        """``function(*args)``; when checkpointing a training step, recomputed in the backward pass, not stored."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(function, *args, use_reentrant=False)
        return function(*args)

    def _norm_acts(self) -> list[NormAct]:
        return [*self.down_norm, self.bottleneck_norm, *self.merge_norm]

    def _styles(self, *, identity: bool) -> list[Style]:
        """Every NormAct's style, in the order of :meth:`_norm_acts`; None for all when ``identity``.

        The fused path without autograd reuses them until a tensor of the code MLP or the affines changes
        (see :meth:`_style_key`). A forward pass with autograd drops the cache: a fused optimizer updates the
        parameters without counting a version, and its step always follows such a pass.
        """
        norms = self._norm_acts()
        if identity:
            return [None] * len(norms)
        if not self.fused:
            code = self.code()
            return [norm.adain.style(code) for norm in norms]
        if torch.is_grad_enabled():
            self._style_cache = None
            return self._float_styles()
        key = self._style_key()
        if self._style_cache is None or self._style_cache[0] != key:
            self._style_cache = (key, self._float_styles())
        return self._style_cache[1]

    def _style_key(self) -> tuple:
        """What the styles depend on: each parameter and buffer of the code MLP and the affines, by storage,
        in-place version, device and dtype (``.to()`` gives new storage, ``load_state_dict`` a new version)."""
        modules = (self.code, *(norm.adain for norm in self._norm_acts()))
        tensors = [t for module in modules for t in (*module.parameters(), *module.buffers())]
        return tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)

    def _float_styles(self) -> list[Style]:
        """The styles in the parameters' dtype, float32 under autocast too (a few tiny matrix products)."""
        with torch.autocast(self.code.constant.device.type, enabled=False):
            code = self.code()
            return [norm.adain.style(code) for norm in self._norm_acts()]


def check_generator_input(x: Tensor, multiple: int) -> None:
    """Raise a BrainlearnError unless ``x`` is (B, 1, X, Y, Z) with sizes divisible by ``multiple``, and more than
    one voxel is left after the halvings (InstanceNorm has nothing to normalize in one voxel)."""
    if x.dim() != 5 or x.shape[1] != 1:
        raise BrainlearnError(f"ShareSynNet takes (B, 1, X, Y, Z) volumes, not shape {tuple(x.shape)}.")
    if any(n % multiple for n in x.shape[2:]):
        raise BrainlearnError(
            f"ShareSynNet needs sizes divisible by {multiple}, not {tuple(x.shape[2:])}; pad the volume "
            "(brainlearn.data.loaders.pad_to_multiple) or crop to such a size."
        )
    if all(n == multiple for n in x.shape[2:]):
        raise BrainlearnError(
            f"ShareSynNet needs more than {multiple} voxels along at least one axis, not {tuple(x.shape[2:])}: "
            "the bottleneck would hold one voxel, which InstanceNorm cannot normalize. Crop or pad to 32 or more."
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
