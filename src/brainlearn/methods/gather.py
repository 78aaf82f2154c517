"""Validation outputs of every process, so that metrics under DDP are those of the whole validation set.

Methods collect per-batch outputs in ``validation_step`` and compute their metrics in ``on_validation_epoch_end``.
Under DDP each process sees only its share of the validation set (Lightning's DistributedSampler, padded to equal
shares by repeating a few items); :func:`gather_rows` joins the shares, in every process, before the metrics.
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
from torch import Tensor


def gather_rows(module: lightning.LightningModule, rows: Tensor | np.ndarray) -> Tensor:
    """``rows`` (N, ...) of every process, concatenated in rank order (W·N, ...) on the CPU; ``rows`` alone in one.

    Every process must call it (a collective operation); shares are equal under Lightning's DistributedSampler.
    """
    rows = torch.as_tensor(rows)
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size == 1:
        return rows
    gathered = module.all_gather(rows.to(module.device))  # (W, N, ...): NCCL needs the tensors on the GPU
    return gathered.reshape(-1, *rows.shape[1:]).cpu()
