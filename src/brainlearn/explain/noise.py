"""Noise-model importance maps (Bintsi et al. 2021, "Voxel-level importance maps for interpretable brain age
estimation").

A noise model learns, for every voxel, how much Gaussian noise a frozen predictor ``f`` tolerates there: it
minimizes ``preservation(f(x), f(x + σ·ε·head)) − weight · mean_head log σ``. Where ``f`` looks, little noise is
tolerated, so the importance is ``1 − σ / max_sigma``, 0 outside the head.

:func:`fit_noise_model` trains the paper's amortized :class:`NoiseScaleNet` on many images; :func:`optimize_noise`
optimizes a free σ per voxel for one batch. Neither changes the predictor: it runs in eval mode (its modes are
restored afterwards) and gradients are taken only with respect to the noise parameters, so its parameters keep
their ``requires_grad`` and receive no ``.grad``.

Choosing ``weight``: at the optimum the preservation loss settles near ``weight / 2 · m``, with ``m`` the fraction of
head voxels ``f`` is sensitive to (the loss is about quadratic in σ). So ``weight`` is in the preservation loss's
units: nats of KL for classifier logits, squared output units for a regressor (years² for brain age; there,
``weight = 2 · tolerated MSE / m``, e.g. 1 year² and m ≈ 0.3 give ≈ 7, or standardize the output first). When the
preservation loss at σ = max_sigma / 2 dwarfs ``weight``, the amortized model first shrinks σ everywhere and needs
many more steps to raise it where ``f`` does not look: watch the logged mean σ.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")

Predictor = Callable[[Tensor], Tensor]


class NoiseScaleNet(nn.Module):
    """The noise model: (B, C, X, Y, Z) image → (B, 1, X, Y, Z) noise scale σ in (0, max_sigma).

    Fully convolutional without pooling, so it works on any spatial size: conv 3³ → dilated conv (dilation 2) →
    dilated conv (dilation 4) → conv 1³, a receptive field of 15³ voxels. ``σ = max_sigma · sigmoid(z)``; the last
    layer starts at zero, so σ starts at ``max_sigma / 2`` everywhere.

    Args:
        in_channels: image channels C.
        width: feature channels of the hidden layers (16: about 14k parameters, cheap at 48³).
        max_sigma: the largest noise scale, in the image's intensity units (3.0: three standard deviations of a
            z-scored image drown any signal).
    """

    def __init__(self, in_channels: int = 1, *, width: int = 16, max_sigma: float = 3.0) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise BrainlearnError(f"NoiseScaleNet: in_channels and width must be >= 1, got {in_channels}, {width}.")
        _check_max_sigma(max_sigma, "NoiseScaleNet")
        self.max_sigma = float(max_sigma)
        self.layers = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv3d(width, width, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1),
            nn.Conv3d(width, width, 3, padding=4, dilation=4),
            nn.LeakyReLU(0.1),
            nn.Conv3d(width, 1, 1),
        )
        last = self.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # sigmoid(0) = 1/2: σ starts at max_sigma / 2

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, X, Y, Z) → (B, 1, X, Y, Z) σ."""
        return self.max_sigma * torch.sigmoid(self.layers(image))


def preservation_loss(reference: Tensor, noisy: Tensor) -> Tensor:
    """How much the prediction moved under noise.

    Args:
        reference: the predictor's outputs (B, K) on the clean images; (B,) counts as K = 1.
        noisy: its outputs (B, K) on the noisy images.

    Returns:
        Scalar. K >= 2 (classifier logits): ``KL(softmax(reference) ‖ softmax(noisy))`` averaged over the batch;
        K = 1 (a regressor): the mean squared difference, in squared output units (years² for brain age).
    """
    if reference.shape != noisy.shape or reference.ndim not in (1, 2):
        raise BrainlearnError(
            f"preservation_loss: expected reference and noisy outputs of the same shape (B, K), got "
            f"{tuple(reference.shape)} and {tuple(noisy.shape)}. Wrap the predictor so it returns a (B, K) tensor."
        )
    if reference.ndim == 1 or reference.shape[1] == 1:
        return F.mse_loss(noisy, reference)
    log_p = F.log_softmax(reference, dim=1)
    log_q = F.log_softmax(noisy, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def noise_objective(
    predictor: Predictor,
    image: Tensor,
    sigma: Tensor,
    *,
    background: float,
    weight: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The noise model's loss ``preservation(f(x), f(x + σ·ε·head)) − weight · mean_head log σ``.

    Args:
        predictor: the frozen model f, (B, C, X, Y, Z) → (B, K) tensor.
        image: x, (B, C, X, Y, Z).
        sigma: σ, (B, 1, X, Y, Z), the same noise scale for every channel.
        background: the intensity outside the head; head = voxels where any channel differs from it.
        weight: the reward for noise; larger trades preservation for more noise everywhere.
        generator: draws ε ~ N(0, 1), on the image's device; None uses the global generator.

    Returns:
        The scalar loss and detached scalar tensors ``{"preservation": ..., "mean_sigma": ...}`` (σ averaged over
        the head), left on the device: reading them every step would stall a GPU.
    """
    _check_image(image, "noise_objective")
    _check_weight(weight, "noise_objective")
    _check_sigma(sigma, image, "noise_objective")
    head = _head_mask(image, background).to(image.dtype)  # (B, 1, X, Y, Z)
    with torch.no_grad():
        reference = _predict(predictor, image)
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    preservation = preservation_loss(reference, _predict(predictor, image + sigma * noise * head))
    voxels = head.sum().clamp_min(1.0)
    mean_log_sigma = (torch.log(sigma.clamp_min(torch.finfo(sigma.dtype).tiny)) * head).sum() / voxels
    loss = preservation - weight * mean_log_sigma
    mean_sigma = (sigma.detach() * head).sum() / voxels
    return loss, {"preservation": preservation.detach(), "mean_sigma": mean_sigma}


def fit_noise_model(
    predictor: Predictor,
    images: Iterable[Tensor],
    *,
    in_channels: int = 1,
    epochs: int = 20,  # ~150 Adam steps localize a toy box; watch the logged mean σ settle
    lr: float = 3e-3,  # the net is small; 1e-3 needs ~3x the steps
    weight: float = 0.1,  # noise reward: preservation settles near weight / 2 · (head fraction f relies on)
    max_sigma: float = 3.0,  # three standard deviations of a z-scored image
    width: int = 16,  # hidden channels of the noise model
    background: float = 0.0,  # skull-stripped images are 0 outside the head
    seed: int = 0,
    device: torch.device | str | None = None,
) -> NoiseScaleNet:
    """Train a :class:`NoiseScaleNet` on a frozen predictor (the paper's amortized noise model), with Adam.

    Args:
        predictor: the frozen model f, (B, C, X, Y, Z) → (B, K) tensor, on ``device``.
        images: iterated once per epoch (a list, or a DataLoader mapped to tensors), yielding (B, C, X, Y, Z)
            float tensors; moved to ``device``.
        in_channels: image channels C.
        epochs: passes over ``images``.
        lr: Adam's learning rate.
        weight: the reward for noise (see :func:`noise_objective`).
        max_sigma: the largest noise scale, in intensity units.
        width: hidden channels of the noise model.
        background: the intensity outside the head.
        seed: seeds the noise model's initialization (without touching the global generator) and ε.
        device: where to train; None: the predictor's parameters' device, else the first batch's.

    Returns:
        The trained noise model in eval mode; ``noise_importance(model(x), x, max_sigma=max_sigma)`` maps it.
    """
    _check_count(epochs, "epochs", "fit_noise_model")
    _check_weight(weight, "fit_noise_model")
    _check_max_sigma(max_sigma, "fit_noise_model")
    device = _training_device(predictor, images, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NoiseScaleNet(in_channels, width=width, max_sigma=max_sigma).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with _in_eval_mode(predictor):
        for epoch in range(1, epochs + 1):
            preservation, mean_sigma = _fit_epoch(
                model,
                optimizer,
                predictor,
                images,
                epoch,
                device=device,
                background=background,
                weight=weight,
                generator=generator,
            )
            log.info(
                "noise model epoch %d/%d: preservation %.4g, mean sigma %.3g", epoch, epochs, preservation, mean_sigma
            )
    return model.eval()


def _fit_epoch(
    model: NoiseScaleNet,
    optimizer: torch.optim.Optimizer,
    predictor: Predictor,
    images: Iterable[Tensor],
    epoch: int,
    *,
    device: torch.device,
    background: float,
    weight: float,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One pass over ``images``; returns the mean preservation loss and mean σ over its batches."""
    parameters = list(model.parameters())
    in_channels = model.layers[0].in_channels
    totals, batches = {"preservation": 0.0, "mean_sigma": 0.0}, 0
    for image in images:
        _check_image(image, "fit_noise_model")
        if image.shape[1] != in_channels:
            raise BrainlearnError(
                f"fit_noise_model: expected images with {in_channels} channel(s), got shape {tuple(image.shape)}. "
                f"Pass in_channels={image.shape[1]}."
            )
        image = image.to(device)
        loss, logs = noise_objective(
            predictor, image, model(image), background=background, weight=weight, generator=generator
        )
        _adam_step(optimizer, loss, parameters)
        totals = {key: totals[key] + logs[key] for key in totals}
        batches += 1
    _check_batches(batches, epoch)
    return float(totals["preservation"]) / batches, float(totals["mean_sigma"]) / batches


def optimize_noise(
    predictor: Predictor,
    image: Tensor,
    *,
    steps: int = 300,  # σ saturates where f ignores the noise within ~50 steps; where f looks it falls slowly
    lr: float = 0.1,  # on the logits of σ; one noise draw per step makes their gradients noisy
    weight: float = 0.1,  # noise reward, as in fit_noise_model
    max_sigma: float = 3.0,  # three standard deviations of a z-scored image
    background: float = 0.0,  # skull-stripped images are 0 outside the head
    seed: int = 0,
) -> Tensor:
    """The per-subject variant: optimize a free σ per voxel for one batch of images, with Adam.

    σ = ``max_sigma · sigmoid(logit)``, the logits starting at 0 (σ = max_sigma / 2). One noise draw per step
    makes the gradient of a voxel that matters noisy, about 1 / sqrt(number of voxels that matter) signal to noise,
    so where ``f`` relies on thousands of voxels σ falls slowly: raise ``steps`` or prefer :func:`fit_noise_model`,
    whose shared weights pool the signal.

    Args:
        predictor: the frozen model f, (B, C, X, Y, Z) → (B, K) tensor, on the image's device.
        image: (B, C, X, Y, Z), B >= 1.
        steps: Adam steps.
        lr: Adam's learning rate on the logits.
        weight: the reward for noise (see :func:`noise_objective`).
        max_sigma: the largest noise scale, in intensity units.
        background: the intensity outside the head.
        seed: seeds ε.

    Returns:
        σ (B, 1, X, Y, Z), detached.
    """
    _check_image(image, "optimize_noise")
    _check_count(steps, "steps", "optimize_noise")
    _check_weight(weight, "optimize_noise")
    _check_max_sigma(max_sigma, "optimize_noise")
    image = image.detach()
    logits = torch.zeros((image.shape[0], 1, *image.shape[2:]), device=image.device, requires_grad=True)
    generator = torch.Generator(device=image.device).manual_seed(seed)
    optimizer = torch.optim.Adam([logits], lr=lr)
    with _in_eval_mode(predictor):
        for _ in range(steps):
            sigma = max_sigma * torch.sigmoid(logits)
            loss, _logs = noise_objective(
                predictor, image, sigma.to(image.dtype), background=background, weight=weight, generator=generator
            )
            _adam_step(optimizer, loss, [logits])
    return (max_sigma * torch.sigmoid(logits)).detach().to(image.dtype)


def noise_importance(sigma: Tensor, image: Tensor, *, max_sigma: float, background: float = 0.0) -> Tensor:
    """Importance from a noise scale: where little noise is tolerated, the predictor looks.

    Args:
        sigma: σ (B, 1, X, Y, Z) from :class:`NoiseScaleNet` or :func:`optimize_noise`.
        image: the images σ was computed for, (B, C, X, Y, Z).
        max_sigma: the ``max_sigma`` σ was computed with.
        background: the intensity outside the head.

    Returns:
        (B, X, Y, Z) float32 importance ``1 − σ / max_sigma`` in [0, 1] inside the head, 0 outside.
    """
    _check_image(image, "noise_importance")
    _check_max_sigma(max_sigma, "noise_importance")
    _check_sigma(sigma, image, "noise_importance")
    importance = (1.0 - sigma.detach().float() / max_sigma).clamp(0.0, 1.0)
    return (importance * _head_mask(image, background)).squeeze(1)  # (B, X, Y, Z)


def _head_mask(image: Tensor, background: float) -> Tensor:
    """(B, C, X, Y, Z) → (B, 1, X, Y, Z) bool: voxels where any channel differs from the background."""
    return (image != background).any(dim=1, keepdim=True)


def _predict(predictor: Predictor, image: Tensor) -> Tensor:
    """f(image), checked to be a (B, K) or (B,) tensor."""
    output = predictor(image)
    if not isinstance(output, Tensor) or output.ndim not in (1, 2) or output.shape[0] != image.shape[0]:
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise BrainlearnError(
            f"The predictor must return a ({image.shape[0]}, K) tensor for a batch of {image.shape[0]}, got {got}. "
            "Wrap it so it returns the logits or the regression output as one tensor."
        )
    return output


def _adam_step(optimizer: torch.optim.Optimizer, loss: Tensor, parameters: list[Tensor]) -> None:
    """One step on ``parameters`` only: autograd.grad leaves the predictor's ``.grad`` untouched."""
    gradients = torch.autograd.grad(loss, parameters)
    for parameter, gradient in zip(parameters, gradients, strict=True):
        parameter.grad = gradient
    optimizer.step()


@contextlib.contextmanager
def _in_eval_mode(predictor: Predictor) -> Iterator[None]:
    """Put an nn.Module predictor in eval mode (no dropout, frozen batch norm), restoring every submodule's flag."""
    modules = list(predictor.modules()) if isinstance(predictor, nn.Module) else []
    flags = [module.training for module in modules]
    for module in modules:
        module.training = False
    try:
        yield
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.training = flag


def _training_device(predictor: Predictor, images: Iterable[Tensor], device: torch.device | str | None) -> torch.device:
    """The requested device, else the predictor's parameters', else the first batch's (else the CPU)."""
    if device is not None:
        return torch.device(device)
    parameter = next(predictor.parameters(), None) if isinstance(predictor, nn.Module) else None
    if parameter is not None:
        return parameter.device
    first = next(iter(images), None)
    return first.device if isinstance(first, Tensor) else torch.device("cpu")


def _check_batches(batches: int, epoch: int) -> None:
    if batches == 0 and epoch == 1:
        raise BrainlearnError(
            "fit_noise_model: no images to train the noise model on: `images` yielded nothing. Pass a non-empty "
            "list of (B, C, X, Y, Z) tensors or a DataLoader."
        )
    if batches == 0:
        raise BrainlearnError(
            f"fit_noise_model: no images to train the noise model on in epoch {epoch}: `images` could be iterated "
            "only once. Pass a list or a DataLoader, not a generator."
        )


def _check_image(image: Tensor, where: str) -> None:
    if not isinstance(image, Tensor) or image.ndim != 5 or not image.is_floating_point():
        got = f"shape {tuple(image.shape)}, {image.dtype}" if isinstance(image, Tensor) else type(image).__name__
        raise BrainlearnError(
            f"{where}: expected a float image batch (B, C, X, Y, Z), got {got}. Add the missing batch or channel "
            "axis, e.g. image[None] for one (C, X, Y, Z) image."
        )


def _check_sigma(sigma: Tensor, image: Tensor, where: str) -> None:
    if sigma.shape != (image.shape[0], 1, *image.shape[2:]):
        raise BrainlearnError(
            f"{where}: expected sigma of shape {(image.shape[0], 1, *image.shape[2:])} for an image of "
            f"shape {tuple(image.shape)}, got {tuple(sigma.shape)}. Pass the σ computed for this image."
        )


def _check_count(value: int, name: str, where: str) -> None:
    if value < 1:
        raise BrainlearnError(f"{where}: {name} must be >= 1, got {value}.")


def _check_weight(weight: float, where: str) -> None:
    if not weight >= 0:  # also rejects NaN
        raise BrainlearnError(f"{where}: weight must be >= 0, got {weight}. Use e.g. 0.1; 0 rewards no noise.")


def _check_max_sigma(max_sigma: float, where: str) -> None:
    if not (max_sigma > 0 and math.isfinite(max_sigma)):
        raise BrainlearnError(
            f"{where}: max_sigma must be a positive finite noise scale, got {max_sigma}. Use e.g. 3.0 for "
            "z-scored images."
        )
