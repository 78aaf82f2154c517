"""Sharpness-aware minimization (SAM, Foret et al. 2021, ICLR) and its adaptive variant (ASAM, Kwon et al. 2021, ICML).

SAM minimizes the loss in a ρ-ball around the weights: it first climbs to the worst point w + ε nearby,
ε = ρ · g / ‖g‖ with g = ∇L(w) (ASAM: ε = ρ · T² g / ‖T g‖ with T = |w| + η elementwise, which makes ρ
scale-invariant), takes the gradient there, returns to w and lets a base optimizer (SGD, AdamW) step with that
gradient. Each step therefore needs two forward and backward passes.

Plain PyTorch::

    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=1e-2, momentum=0.9)
    loss_fn(model(x)).backward()             # g at w
    optimizer.first_step(zero_grad=True)     # w → w + ε
    with frozen_norm_stats(model):           # the perturbed pass must not move BatchNorm's running statistics
        loss_fn(model(x)).backward()         # g' at w + ε
    optimizer.second_step(zero_grad=True)    # back to w, base step with g'

Lightning (manual optimization, ``self.automatic_optimization = False``): the same sequence, with the second pass
handed to :meth:`SAM.step` as a closure so that Lightning counts one optimizer step (``global_step``,
``max_steps`` and checkpoint resumption rely on it)::

    optimizer = self.optimizers()
    optimizer.zero_grad()
    self.manual_backward(self.loss(batch))   # g at w

    def closure():                           # called by SAM.step between first_step and second_step
        with frozen_norm_stats(self):
            loss = self.loss(batch)
            self.manual_backward(loss)       # g' at w + ε
        return loss

    optimizer.step(closure=closure)

``16-mixed`` precision is not supported: its gradient scaler calls ``step()`` without a closure. ``bf16-mixed`` and
``32-true`` work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization wrapped around a base optimizer.

    The base optimizer shares the parameter groups and the state (momentum buffers, Adam moments), so
    ``state_dict`` / ``load_state_dict`` round-trip everything a Lightning checkpoint needs to resume.

    Args:
        params: parameters or parameter groups, as for any torch optimizer; a group may set its own ``rho``.
        base_optimizer_cls: the optimizer that takes the step, e.g. ``torch.optim.SGD`` or ``torch.optim.AdamW``.
        rho: radius of the neighbourhood (Foret et al.: 0.05 for SGD; ASAM typically 0.5–2).
        adaptive: ASAM's scale-invariant neighbourhood, ε = ρ T² g / ‖T g‖ with T = |w| + η.
        eta: ASAM's η, which lets weights at 0 move (Kwon et al. use 0.01; the widely used
            implementation whose adaptive ρ = 2 document 001 took has η = 0).
        **kwargs: options of the base optimizer (``lr``, ``momentum``, ``weight_decay``, ...).

    Raises:
        BrainlearnError: ``rho`` or ``eta`` is negative, or ``base_optimizer_cls`` is not a torch optimizer.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        **kwargs: Any,
    ) -> None:
        _check_non_negative("rho", rho)
        _check_non_negative("eta", eta)
        if not (isinstance(base_optimizer_cls, type) and issubclass(base_optimizer_cls, torch.optim.Optimizer)):
            raise BrainlearnError(
                f"SAM: base_optimizer_cls must be a torch optimizer class such as torch.optim.SGD, "
                f"not {base_optimizer_cls!r}."
            )
        super().__init__(params, dict(rho=float(rho), adaptive=bool(adaptive), eta=float(eta), **kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **kwargs)
        self.defaults.update(self.base_optimizer.defaults)
        self._share_with_base()
        self._weights: dict[Tensor, Tensor] = {}  # w, kept while the parameters sit at w + ε

    def _share_with_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter with a gradient from w to w + ε (ε from the current gradients, see the class)."""
        norm = self._scaled_grad_norm()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._weights[p] = p.detach().clone()
                scale = self._scale(p, group)
                p.add_(p.grad * scale**2 * (group["rho"] / (norm + 1e-12)).to(p))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to w and let the base optimizer step with the gradient now held (the one taken at w + ε).

        Raises:
            RuntimeError: :meth:`first_step` was not called since the last second step.
        """
        if not self._weights:
            raise RuntimeError("SAM.second_step: call first_step first (the weights are not perturbed).")
        for p, weight in self._weights.items():
            p.copy_(weight)
        self._weights.clear()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SAM update: first step, ``closure`` (loss and backward at w + ε), second step.

        The gradients at w must already be there (a backward pass before calling this).

        Args:
            closure: recomputes the loss and calls backward; it runs with gradients enabled.

        Returns:
            What ``closure`` returned (the loss at w + ε).

        Raises:
            BrainlearnError: no closure was given.
        """
        if closure is None:
            raise BrainlearnError(
                "SAM.step needs a closure that recomputes the loss and calls backward (the second of SAM's two "
                "passes); or call first_step and second_step yourself. 16-mixed precision cannot pass one; use "
                "bf16-mixed or 32-true."
            )
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict; its parameter groups also hold ``rho``, ``adaptive`` and ``eta``."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict written by :meth:`state_dict`."""
        self.base_optimizer.load_state_dict(state_dict)
        self._share_with_base()

    def _scale(self, p: Tensor, group: dict[str, Any]) -> Tensor | float:
        """ASAM's T: |w| + η elementwise; 1 for plain SAM."""
        return p.abs() + group["eta"] if group["adaptive"] else 1.0

    def _scaled_grad_norm(self) -> Tensor:
        """‖T g‖ over all parameters with a gradient, as a 0-d tensor."""
        norms = [
            (self._scale(p, group) * p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not norms:
            return torch.tensor(0.0)
        return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))


@contextlib.contextmanager
def frozen_norm_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, BatchNorm layers of ``module`` normalize as usual but leave their running statistics alone.

    SAM's second pass runs at the perturbed weights on the same batch; letting it update the running mean and
    variance would count the batch twice, with statistics of weights the model never keeps.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 − 0) · running + 0 · batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _check_non_negative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise BrainlearnError(f"SAM: {name} must be a number >= 0, not {value!r}.")
