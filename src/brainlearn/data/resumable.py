"""A DataLoader that resumes where it stopped: its random streams and its place in the epoch travel in checkpoints.

Lightning saves the state of a training loader that has ``state_dict``/``load_state_dict`` into each checkpoint and
hands it back before iterating again. :class:`ResumableLoader` saves the streams it draws from (the shuffle
generator, the sampler's, those of the dataset's transforms; see :mod:`brainlearn.random_states`) as they were
when the current epoch began, and how many batches it has handed out since. A resume from a checkpoint written
in the middle of an epoch puts the streams back, draws the same order and skips the batches already trained on
(they are loaded again, to draw what their transforms drew, but not trained on); from an end-of-epoch checkpoint
it starts the next epoch with the streams as they were.

With persistent worker processes (``num_workers > 0`` on a GPU machine) the workers' streams live on across
epochs outside this process: a resume draws the same shuffle but not the same augmentations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from brainlearn.random_states import generator_states, restore_generator_states


class ResumableLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` with a state (its random streams, its place in the epoch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch_start: dict[str, Any] | None = None  # the streams when this epoch's first batch was drawn
        self._handed_out = 0  # batches handed out in this epoch
        self._skip = 0  # batches to skip when the next epoch starts (a resume in the middle of one)

    def _streams(self) -> dict[str, Any]:
        return {"generator": self.generator, "sampler": self.sampler, "dataset": self.dataset}

    def __iter__(self) -> Iterator[Any]:
        self._epoch_start, self._handed_out = generator_states(self._streams()), 0
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        for batch in iterator:
            self._handed_out += 1
            if self._handed_out > skip:
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """The streams and the number of batches handed out, as a later :meth:`load_state_dict` needs them."""
        if self._epoch_start is None or self._handed_out >= len(self):  # between epochs: start the next afresh
            return {"streams": generator_states(self._streams()), "handed_out": 0}
        return {"streams": self._epoch_start, "handed_out": self._handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the streams back; the next iteration skips the batches handed out before the checkpoint."""
        restore_generator_states(self._streams(), state["streams"], where="training data")
        self._skip = int(state["handed_out"])
