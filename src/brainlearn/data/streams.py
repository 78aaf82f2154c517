"""A random stream that DataLoader workers do not share: the one draw source of the random transforms and samplers."""

from __future__ import annotations

import numpy as np
from torch.utils.data import get_worker_info


class WorkerStream:
    """A numpy generator: one stream from ``seed`` in the main process, re-seeded from (``seed``, the worker's seed)
    in a DataLoader worker's copy, so that workers (and, without persistent workers, epochs) draw differently."""

    def __init__(self, seed: int):
        self.seed, self._rng, self._worker_seed = seed, np.random.default_rng(seed), None

    def rng(self) -> np.random.Generator:
        """The generator to draw from in the calling process."""
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:  # a worker's copy: its own stream
            self._rng, self._worker_seed = np.random.default_rng([self.seed, info.seed % 2**63]), info.seed
        return self._rng
