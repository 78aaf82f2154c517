"""The fast path: switches that make a step cheaper without changing what it computes, and the check that they do not.

Each switch is measured on its own by ``brainlearn bench`` (a ladder of arms, each adding one switch to the plain
float32 reference) and checked for numerics by :func:`relative_error` in the tests:

- bf16 autocast (:func:`autocast`): matrix work in bfloat16, reductions and losses in float32. The trainer's
  ``precision: auto`` turns it on for a CUDA GPU with native bf16.
- channels-last memory (:func:`to_channels_last`): 5D weights as ``channels_last_3d`` (4D as ``channels_last``), so
  cuDNN picks its NDHWC kernels and every convolution's output follows. The trainer's ``channels_last: auto`` turns
  it on for a CUDA GPU.
- fused optimizers (:func:`adam`): Adam/AdamW update every parameter in one kernel instead of a loop of small ones;
  used by every method whose parameters all live on a CPU or CUDA device.
- :func:`compile_networks`: ``torch.compile`` of each network in place (state dict keys unchanged), ``mode``
  ``"reduce-overhead"`` adding CUDA graphs for fixed-shape inference and sampling; off by default (minutes of
  compiling that pay off only over long runs), the trainer's ``compile`` setting and ``brainlearn bench --compile``.

What no switch can do is done in the networks themselves: ShareSynNet folds instance norm, AdaIN and LeakyReLU into
one pass and hoists its input-independent AdaIN code (:mod:`brainlearn.models.sharesynnet`); attention runs through
:func:`torch.nn.functional.scaled_dot_product_attention` (flash kernels on a GPU); the generator's six passes of a
ShareGAN step run as two batched calls; gradient checkpointing (``model_options.checkpointing``) trades compute for
memory at 256³ on small GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# A bf16 path agrees with float32 when its relative error is at most BF16_ERROR (bf16 keeps 8 bits: 2^-8 = 0.4 %
# per rounding, a few roundings deep) or at most BF16_FACTOR times what rounding the weights to bf16 alone does to
# the float32 network (deep networks at initialization amplify any rounding; see round_to_bf16).
BF16_ERROR = 3e-2
BF16_FACTOR = 3.0


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    """``torch.autocast`` to ``dtype`` on ``device``'s type when ``enabled``; a plain float32 context otherwise."""
    device_type = torch.device(device).type
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` is a CUDA GPU that computes in bf16 natively (Ampere or newer): where bf16 is the default."""
    return torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def inference_autocast(device: torch.device | str):
    """bf16 autocast for inference on a GPU with native bf16 (:func:`native_bf16`) — what ``precision: auto`` trains
    and validates with there — and plain float32 everywhere else (the CPU results stay exactly as they were)."""
    return autocast(device, native_bf16(device))


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store ``module``'s 5D parameters and buffers as ``channels_last_3d`` and 4D ones as ``channels_last``, in place.

    The Parameter objects stay the same (an optimizer built before keeps working); values are unchanged, only the
    order of the numbers in memory. Convolutions then produce channels-last outputs, whatever the input's layout.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dim() in formats:
                tensor.data = tensor.data.contiguous(memory_format=formats[tensor.dim()])
    return module


def is_channels_last(module: nn.Module) -> bool:
    """Whether every 5D (4D) parameter of ``module`` is stored channels-last (True for a module without any)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return all(p.is_contiguous(memory_format=formats[p.dim()]) for p in module.parameters() if p.dim() in formats)


def fused_supported(parameters: Iterable[Tensor]) -> bool:
    """Whether a fused Adam can update ``parameters``: all floating point, on the CPU or a CUDA GPU."""
    parameters = list(parameters)
    return bool(parameters) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)


def adam(parameters: Iterable[Tensor], *, decoupled: bool = False, fused: bool | None = None, **settings: Any):
    """``torch.optim.Adam`` (``decoupled``: AdamW) over ``parameters``, fused where the parameters allow it.

    Args:
        parameters: the tensors to optimize (a module's ``parameters()``); they should be on their device already,
            as they are when Lightning calls ``configure_optimizers``.
        decoupled: AdamW's decoupled weight decay instead of Adam's L2 term.
        fused: None decides by :func:`fused_supported`; True or False forces it (the benchmark's reference is False).
        **settings: ``lr``, ``betas``, ``weight_decay``, ... as for ``torch.optim.Adam``.
    """
    parameters = list(parameters)
    if fused is None:
        fused = fused_supported(parameters)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(parameters, fused=True if fused else None, **settings)


def compile_networks(module: nn.Module, mode: str | bool | None) -> nn.Module:
    """Compile ``module``'s networks in place with ``torch.compile`` (``mode`` one of :data:`COMPILE_MODES`).

    Each direct child holding parameters is compiled on its own (``nn.Module.compile``), so the module's methods,
    hooks and state dict keys stay as they are. False or None leaves the module alone; True means ``"default"``.

    Raises:
        BrainlearnError: an unknown mode.
    """
    if mode in (None, False):
        return module
    mode = "default" if mode is True else mode
    if mode not in COMPILE_MODES:
        raise BrainlearnError(
            f"compile: unknown mode {mode!r}; write false, true or one of {', '.join(COMPILE_MODES)}."
        )
    children = [child for child in module.children() if any(True for _ in child.parameters())]
    for child in children or [module]:
        child.compile(mode=mode)
    return module


def round_to_bf16(module: nn.Module) -> nn.Module:
    """Round every floating-point parameter and buffer of ``module`` to the nearest bfloat16 value, kept in float32.

    The float32 network that results differs from the original by bf16 storage alone: the errors it makes are the
    scale against which a bf16 fast path's errors are judged (a deep network at initialization can move its
    gradients by tens of percent from this rounding alone).
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16))
    return module


def within_bf16_tolerance(error: float, rounding: float) -> bool:
    """Whether a bf16 path's relative ``error`` is within bf16 tolerance, given the ``rounding`` error of the same
    float32 network with bf16-rounded weights (see :data:`BF16_ERROR`, :data:`BF16_FACTOR`)."""
    return error <= max(BF16_ERROR, BF16_FACTOR * rounding)


def relative_error(fast: Tensor, reference: Tensor) -> float:
    """‖fast − reference‖ / ‖reference‖ in float64 (0 when both are zero; inf when only the reference is)."""
    fast, reference = fast.detach().double(), reference.detach().double()
    if fast.shape != reference.shape:
        raise BrainlearnError(f"relative_error: shapes differ, {tuple(fast.shape)} vs {tuple(reference.shape)}.")
    norm = reference.norm()
    difference = (fast - reference).norm()
    if norm == 0:
        return 0.0 if difference == 0 else float("inf")
    return float(difference / norm)
