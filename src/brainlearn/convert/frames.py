"""Dynamic (4D) PET: showing the frame times, and averaging the frames into one static image when asked.

A dynamic PET series holds one 3D volume per time frame. brainlearn analyses static images, so a 4D series is
left out and its frame times are listed, unless ``average_frames`` is set: then the frames are averaged,
weighted by their durations, which gives the mean activity over the whole acquisition (what a static scan of
that window would measure). Frame times come from the dcm2niix sidecar (``FrameTimesStart``,
``FrameDuration``) or from the ECAT frame subheaders.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainlearn.errors import BrainlearnError


def describe_frames(starts: Sequence[float] | None, durations: Sequence[float] | None, n: int) -> str:
    """``"3 frames, start+duration (s): 0+60, 60+120, 180+300"``, or the count when the times are unknown."""
    if not starts or not durations or len(starts) != n or len(durations) != n:
        return f"{n} frames (frame times unknown)"
    pairs = zip(starts, durations, strict=True)
    times = ", ".join(f"{_number(start)}+{_number(duration)}" for start, duration in pairs)
    return f"{n} frames, start+duration (s): {times}"


def average_frames(array: np.ndarray, durations: Sequence[float] | None) -> np.ndarray:
    """The duration-weighted mean of the frames of ``array`` (X, Y, Z, T), as float32 (X, Y, Z).

    Without usable durations (missing, wrong count, or not positive) every frame weighs the same.

    Raises:
        BrainlearnError: if ``array`` is not 4D.
    """
    if array.ndim != 4:
        raise BrainlearnError(f"averaging frames needs a 4D image (X, Y, Z, T), got shape {array.shape}.")
    weights = np.ones(array.shape[3])
    if durations is not None and len(durations) == array.shape[3] and all(d > 0 for d in durations):
        weights = np.asarray(durations, dtype=np.float64)
    weights = weights / weights.sum()
    mean = np.tensordot(array.astype(np.float64, copy=False), weights, axes=([3], [0]))  # (X, Y, Z)
    return mean.astype(np.float32)


def frame_times(sidecar: dict) -> tuple[list[float] | None, list[float] | None]:
    """(starts, durations) in seconds from a dcm2niix sidecar, None where absent."""
    return _floats(sidecar.get("FrameTimesStart")), _floats(sidecar.get("FrameDuration"))


def _floats(values) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        return None


def _number(value: float) -> str:
    return f"{value:g}"
