"""One session through the preprocessing steps: native scans in, analysis-ready volumes on the reference grid out.

T1 first: reorient to RAS, N4, skull strip, affine registration to the MNI template. The other images (FLAIR,
T2, PET) are rigidly registered to the same session's T1 and then follow the T1's transform; lesion masks are
carried with nearest-neighbour interpolation. Every transform is saved, so any map on the reference grid can be
taken back to the native T1 (``brainlearn to-native``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainlearn.errors import BrainlearnError
from brainlearn.io import Image, check_same_grid, read_image, read_mask, write_image
from brainlearn.preprocess.intensity import n4_correct, normalize

MR_COLUMNS = ("t2", "flair")
STEPS = ("n4", "skullstrip", "register", "normalize")


@dataclass
class SessionResult:
    """What happened to one session: outputs, QC numbers, per-step seconds, or why it failed."""

    participant_id: str
    session_id: str
    status: str = "done"
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    qc: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def preprocess_session(row: dict, out: Path, settings: dict) -> SessionResult:
    """Run the steps on one table row; raise :class:`BrainlearnError` for a session that cannot be processed."""
    from brainlearn.preprocess import register
    from brainlearn.preprocess.qc import save_qc_figure

    result = SessionResult(row["participant_id"], row["session_id"], outputs={"native_t1": str(row["t1"])})
    timer = _Timer(result.seconds)
    steps = set(settings["steps"])
    with timer("reorient"):
        t1 = read_image(row["t1"], canonical=True)
    if "n4" in steps:
        with timer("n4"):
            t1, _ = n4_correct(t1)
    brain = None
    if "skullstrip" in steps:
        from brainlearn.preprocess.skullstrip import skull_strip

        with timer("skullstrip"):
            t1, mask = skull_strip(t1)
            brain = mask.array > 0
    grid_affine, grid_shape = register.reference_grid(
        settings["spacing"], tuple(settings["shape"]) if settings["shape"] else None, settings["pad_to"]
    )
    if "register" in steps:
        with timer("register"):
            transform = register.register_to_template(t1, brain_mask=brain)
    else:
        transform = sitk.Transform(3, sitk.sitkIdentity)
    folder = out / row["participant_id"] / row["session_id"]
    _save_transform(register, transform, folder / "t1_to_template.tfm", result)
    with timer("resample"):
        t1_grid = register.resample(t1, transform, grid_affine, grid_shape)
        brain_grid = t1_grid.array != 0 if brain is not None else None
        others = _other_images(row, t1, transform, grid_affine, grid_shape, folder, steps, result, timer)
    with timer("normalize"):
        images = {"t1": t1_grid, **others}
        for column, image in list(images.items()):
            if column != "mask" and "normalize" in steps:
                images[column] = _normalized(column, image, brain_grid, settings)
    for column, image in images.items():
        path = folder / f"{column}.nii.gz"
        write_image(path, image.array, image.affine)
        result.outputs[column] = str(path)
    result.qc = _qc(t1_grid, brain, t1.affine, transform)
    with timer("qc"):
        result.outputs["qc"] = str(save_qc_figure(t1_grid, folder / "qc.png", title=_title(row)))
    return result


def _other_images(row, t1: Image, transform, grid_affine, grid_shape, folder, steps, result, timer) -> dict:
    from brainlearn.preprocess import register

    images = {}
    for column in (*MR_COLUMNS, "pet"):
        if not row.get(column):
            continue
        with timer(f"{column}"):
            image = read_image(row[column], canonical=True)
            if column in MR_COLUMNS and "n4" in steps:
                image, _ = n4_correct(image)
            to_t1 = register.register_affine(image, t1, rigid=True) if "register" in steps else None
            chain = _compose(transform, to_t1)
            _save_transform(
                register, to_t1 or sitk.Transform(3, sitk.sitkIdentity), folder / f"{column}_to_t1.tfm", result
            )
            images[column] = register.resample(image, chain, grid_affine, grid_shape)
    if row.get("mask"):
        mask = read_mask(row["mask"], canonical=True)
        reference = t1 if _same_grid(mask, t1) else None
        if reference is None and row.get("flair"):
            flair = read_image(row["flair"], canonical=True)
            if _same_grid(mask, flair):
                to_t1 = register.register_affine(flair, t1, rigid=True) if "register" in steps else None
                reference = flair
                transform = _compose(transform, to_t1)
        if reference is None:
            raise BrainlearnError(f"{row['mask']}: the mask lies on neither the T1 nor the FLAIR grid of this session.")
        images["mask"] = register.resample(mask, transform, grid_affine, grid_shape, nearest=True)
    return images


def _compose(t1_to_template: sitk.Transform, image_to_t1: sitk.Transform | None) -> sitk.Transform:
    """Template point → T1 point → image point (ITK transforms map fixed points to moving points)."""
    if image_to_t1 is None:
        return t1_to_template
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(image_to_t1)
    composite.AddTransform(t1_to_template)  # applied first: the last added transform acts first
    return composite


def _normalized(column: str, image: Image, brain: np.ndarray | None, settings: dict) -> Image:
    method = settings["normalize"]["pet" if column == "pet" else "mr"]
    reference = _reference_region(settings["suvr_reference"], image) if method == "suvr" else None
    return normalize(image, method, brain=brain, reference=reference)


def _reference_region(name: str, image: Image) -> np.ndarray:
    from brainlearn.preprocess.template import template_on_grid

    _, labels = template_on_grid(image.affine, image.shape)
    ids = {"pons": (16,), "cerebellum": (8, 47), "brain": None}
    if name not in ids:
        raise BrainlearnError(f"suvr_reference must be one of {', '.join(ids)}, not {name!r}.")
    return labels > 0 if ids[name] is None else np.isin(labels, ids[name])


def _qc(t1_grid: Image, brain, native_affine, transform) -> dict[str, float]:
    from brainlearn.preprocess.qc import similarity_to_template

    qc = {"similarity": similarity_to_template(t1_grid)}
    if brain is not None:
        qc["brain_ml"] = float(brain.sum() * abs(np.linalg.det(native_affine[:3, :3])) / 1000)
    return qc


def _save_transform(register, transform, path: Path, result: SessionResult) -> None:
    register.save_transform(transform, path)
    result.outputs[path.stem] = str(path)


def _same_grid(a: Image, b: Image) -> bool:
    try:
        check_same_grid(b, a)
    except BrainlearnError:
        return False
    return True


def _title(row: dict) -> str:
    return f"{row['participant_id']} {row['session_id']}"


class _Timer:
    """``with timer("step"):`` adds the step's wall-clock seconds to a dict."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds
        self._step = ""
        self._start = 0.0

    def __call__(self, step: str) -> _Timer:
        self._step = step
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.seconds[self._step] = self.seconds.get(self._step, 0.0) + time.perf_counter() - self._start
