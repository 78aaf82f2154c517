"""Random states saved in checkpoints, so that a resumed run draws what the uninterrupted run would have drawn.

Lightning restores weights, optimizers and loop counters from a checkpoint, but not the random streams: after a
resume, dropout masks, shuffles, augmentations and a method's own draws (masks, noise, partners) would start again
from the seed, and the run would end somewhere else. Here every stream is saved with the checkpoint and put back
when it is loaded:

* the process-wide streams (Python's ``random``, NumPy's legacy global, torch's CPU and CUDA generators), and the
  generators a LightningModule keeps as attributes, by :class:`RandomStates` (a Lightning callback);
* the streams of a training DataLoader (its shuffle generator, its sampler's, the dataset transforms'), by the
  loader itself (:class:`brainlearn.data.resumable.ResumableLoader`).

Generators are found by walking attributes from a root object (:func:`find_generators`) and keyed by their
attribute path (``"_train_rng"``, ``"dataset.transform._stream._rng"``), so a state goes back to the same
generator in the new process. States are plain tensors, ints and lists: checkpoints still load with
``weights_only=True``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.combined_loader import CombinedLoader

logger = logging.getLogger(__name__)

KEY = "random_states"
_GENERATORS = (torch.Generator, np.random.Generator)
_MAX_DEPTH = 8
# Types whose attributes are walked: ours, torch's data classes and networks. Anything else (a Lightning Trainer,
# a pandas table, an array) is a leaf; this keeps the walk short and its paths the same in every process.
_WALKED_MODULES = ("brainlearn.", "torch.utils.data.")
_SKIPPED_ATTRIBUTES = {"_iterator", "_trainer", "trainer"}


def find_generators(root: Any) -> dict[str, torch.Generator | np.random.Generator]:
    """The random generators reachable from ``root`` through attributes, keyed by attribute path.

    Walks brainlearn objects, torch data classes (loaders, samplers, subsets) and ``nn.Module`` trees, with
    containers (dicts, lists, tuples) on the way; each generator is listed once, under its first path.
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(obj: Any, path: str, depth: int) -> None:
        if id(obj) in seen or depth > _MAX_DEPTH:
            return
        seen.add(id(obj))
        if isinstance(obj, _GENERATORS):
            found[path] = obj
            return
        for key, value in _children(obj):
            visit(value, f"{path}.{key}" if path else str(key), depth + 1)

    visit(root, "", 0)
    return found


def _children(obj: Any) -> list[tuple[Any, Any]]:
    if isinstance(obj, dict):
        return [(key, value) for key, value in obj.items() if isinstance(key, str | int)]
    if isinstance(obj, list | tuple):
        return list(enumerate(obj))
    walked = isinstance(obj, torch.nn.Module) or type(obj).__module__.startswith(_WALKED_MODULES)
    if not walked or not hasattr(obj, "__dict__"):
        return []
    return [(key, value) for key, value in vars(obj).items() if key not in _SKIPPED_ATTRIBUTES]


def generator_states(root: Any) -> dict[str, Any]:
    """The state of every generator :func:`find_generators` finds from ``root``."""
    return {path: _state(generator) for path, generator in find_generators(root).items()}


def restore_generator_states(root: Any, states: dict[str, Any], *, where: str) -> None:
    """Put ``states`` (from :func:`generator_states`) back into the generators reachable from ``root``.

    A generator without a saved state (or a state without its generator) keeps its seeded start and is logged:
    the checkpoint comes from other code, and the run goes on without an exact resume.
    """
    generators = find_generators(root)
    for path in sorted(set(generators) ^ set(states)):
        logger.warning(
            "%s: random stream %r not in both the checkpoint and the run; it restarts from its seed", where, path
        )
    for path in set(generators) & set(states):
        _set_state(generators[path], states[path])


def _state(generator: torch.Generator | np.random.Generator) -> Any:
    if isinstance(generator, torch.Generator):
        return generator.get_state()
    return generator.bit_generator.state  # a dict of str and int


def _set_state(generator: torch.Generator | np.random.Generator, state: Any) -> None:
    if isinstance(generator, torch.Generator):
        generator.set_state(state)
    else:
        generator.bit_generator.state = state


def global_states() -> dict[str, Any]:
    """Python's, NumPy's global and torch's (CPU and, when present, CUDA) random states."""
    kind, key, position, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, key.tolist(), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_global_states(states: dict[str, Any]) -> None:
    """Put back what :func:`global_states` saved (CUDA states only where CUDA is present)."""
    random.setstate(_tuples(states["python"]))
    kind, key, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tuples(value: Any) -> Any:
    # random.setstate wants the nested tuples back that a round trip through some formats turns into lists
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


class RandomStates(Callback):
    """Saves the process-wide random states and the module's own generators with every checkpoint; restores them.

    The training DataLoader's streams travel in the loader's own state, which Lightning saves with its loop
    (``loops.fit_loop.state_dict.combined_loader``) but gives back only after a checkpoint from the middle of an
    epoch. This callback gives it back after an end-of-epoch checkpoint too, in ``on_train_start``: the loaders
    exist then, and a :class:`~brainlearn.data.resumable.ResumableLoader` draws nothing before its first batch.
    """

    def __init__(self) -> None:
        self._loader_states: list[dict[str, Any]] = []

    def on_save_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[KEY] = {"global": global_states(), "module": generator_states(pl_module)}

    def on_load_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(KEY)
        if states is None:
            logger.warning("the checkpoint holds no random states (older brainlearn): the resumed run draws anew")
            return
        restore_global_states(states["global"])
        restore_generator_states(pl_module, states["module"], where="module")
        loop_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._loader_states = list(loop_state.get("combined_loader", []))

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        from brainlearn.data.resumable import ResumableLoader  # it imports this module

        states, self._loader_states = self._loader_states, []
        if not states:
            return
        loaders = CombinedLoader(trainer.train_dataloader, "max_size_cycle").flattened
        resumable = [loader for loader in loaders if isinstance(loader, ResumableLoader)]
        if len(resumable) != len(states):
            logger.warning(
                "training data: %d loader states saved for %d loaders; they restart from their seeds",
                len(states),
                len(resumable),
            )
            return
        for loader, state in zip(resumable, states, strict=True):
            loader.load_state_dict(state)
