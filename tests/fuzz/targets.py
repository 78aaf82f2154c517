"""One fuzz target per brainlearn reader: how its inputs are mutated, how it is called, and its oracle.

A target builds its seed inputs once in its work folder. :meth:`Target.case` writes one mutated input there,
:meth:`Target.read` hands it to the reader, and :meth:`Target.check` is the oracle for an accepted result: it
raises :class:`harness.Wrong` when the result is not what a valid input gives (not 3D, non-finite, not what
the header declares, read from a damaged gzip stream, ...). A refusal must be a ``BrainlearnError`` whose
message names the input (checked by the harness against :attr:`Case.names`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import seeds
from harness import DECLINED, Case, Wrong, mutate_any, mutate_bytes, mutate_once, mutate_text

from brainlearn.io import MAX_VOXELS


class Target:
    """Base class: seeds by name, mutated into ``<work>/case-<seed name>``."""

    name = ""
    reader = ""  # the function fuzzed, for the report
    text = False  # whether text mutations suit the format

    def __init__(self, work: Path):
        self.work = Path(work) / self.name
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.seeds = self.make_seeds()

    def make_seeds(self) -> dict[str, bytes]:
        raise NotImplementedError

    def case(self, rng: random.Random, index: int) -> Case:
        """Input ``index``: the first inputs are the seeds as they are, then mutated seeds."""
        names = sorted(self.seeds)
        seed_name = names[index] if index < len(names) else rng.choice(names)
        data, steps = self.seeds[seed_name], []
        if index >= len(names):
            data, steps = self.mutate(rng, seed_name, data)
        path = self.work / f"case-{seed_name}"
        path.write_bytes(data)
        return Case(index, seed_name, steps, path, (str(path),), {"rng": rng})

    def mutate(self, rng: random.Random, seed_name: str, data: bytes) -> tuple[bytes, list[str]]:
        return mutate_any(rng, data, text=self.text)

    def read(self, case: Case):
        raise NotImplementedError

    def check(self, case: Case, result) -> None:
        """Raise :class:`Wrong` if ``result`` is not a valid read of ``case``."""


# ---------------------------------------------------------------------------------------------------------- NIfTI
HEADER_FIELDS = (
    ["dim"] * 6
    + ["datatype"] * 3
    + ["vox_offset", "pixdim"] * 3
    + ["bitpix", "scl_slope", "scl_inter", "qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "magic"] * 2
    + ["quatern_b", "quatern_c", "quatern_d", "qoffset_x", "sizeof_hdr", "dim_info", "intent_code", "slice_code"]
    + ["slice_start", "slice_end", "xyzt_units", "cal_max", "cal_min", "descrip", "esize", "esize"]
)
DATATYPES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 255, 3, -1)
FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e-45, 1e30, 3.4e38, 1e300, np.inf, -np.inf, np.nan, 1000.0)
MAGICS = (b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"n+1\n")


def mutate_nifti_header(rng: random.Random, content: bytes) -> tuple[bytes, str]:
    """Set one header field (one element of an array field) to an edge value, in the file's byte order."""
    kind = nib.nifti1
    for candidate, order in ((nib.nifti1, "<"), (nib.nifti1, ">"), (nib.nifti2, "<"), (nib.nifti2, ">")):
        if content[:4] == np.array(candidate.header_dtype.itemsize, order + "i4").tobytes():
            kind = candidate
            break
    else:
        order = "<"
    dtype = kind.header_dtype.newbyteorder(order)
    if len(content) < dtype.itemsize:
        return mutate_once(rng, content)
    name = rng.choice(HEADER_FIELDS)
    if name == "esize":  # the size of the first extension, right after the header and its 4 flag bytes
        at = dtype.itemsize + 4
        value = rng.choice((0, 8, 15, 16, 32, 48, -16, 2**20, 2**30, 2**31 - 16))
        flag = b"\x01\x00\x00\x00"
        packed = np.array(value, order + "i4").tobytes()
        return content[: dtype.itemsize] + flag + packed + content[at + 4 :], f"first extension size := {value}"
    header = np.frombuffer(content, dtype=dtype, count=1).copy()
    field = header[name][0]
    base = dtype.fields[name][0].base
    value = _edge_value(rng, name, base)
    if np.ndim(field):
        k = rng.randrange(len(field))
        header[name][0, k] = value
        name = f"{name}[{k}]"
    else:
        header[name] = value
    return header.tobytes() + content[dtype.itemsize :], f"header {name} := {value!r}"


def _edge_value(rng: random.Random, name: str, dtype: np.dtype):
    if dtype.kind == "S":
        return rng.choice(MAGICS) if name == "magic" else rng.randbytes(rng.randint(0, dtype.itemsize))
    if dtype.kind == "f":
        return dtype.type(rng.choice(FLOATS) if rng.random() < 0.8 else rng.uniform(-1e4, 1e4))
    info = np.iinfo(dtype)
    if name == "datatype":
        choices = DATATYPES
    else:
        choices = (0, 1, -1, 2, 3, 4, 5, 7, 8, 9, 16, 255, 256, 348, 352, 540, 32767, info.max, info.min, info.max - 1)
    value = rng.choice(choices) if rng.random() < 0.85 else rng.randint(int(info.min), int(info.max))
    return dtype.type(min(max(value, int(info.min)), int(info.max)))


def mutate_prefix(rng: random.Random, data: bytes, size: int) -> tuple[bytes, str]:
    """A byte mutation inside the first ``size`` bytes (the header), the rest kept."""
    head, step = mutate_once(rng, data[:size])
    return head + data[size:], f"{step} (in the first {size} bytes)"


class NiftiTarget(Target):
    """Base of the NIfTI targets: seeds of :func:`seeds.nifti_seeds`; a gzip file is mutated either as
    compressed bytes (25%) or inside (header fields, header bytes, any byte, truncation) and compressed again."""

    def make_seeds(self) -> dict[str, bytes]:
        return seeds.nifti_seeds(self.work / "seeds")

    def mutate(self, rng: random.Random, seed_name: str, data: bytes) -> tuple[bytes, list[str]]:
        gz = seed_name.endswith(".gz")
        if gz and rng.random() < 0.25:
            data, steps = mutate_bytes(rng, data)
            return data, [f"gzip: {step}" for step in steps]
        content = gzip.decompress(data) if gz else data
        header_size = 128 if seed_name.endswith(".npy") else 600 if "nifti2" in seed_name else 400  # + extensions
        steps = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            choice = rng.random()
            if choice < 0.5 and not seed_name.endswith(".npy"):
                content, step = mutate_nifti_header(rng, content)
            elif choice < 0.85:
                content, step = mutate_prefix(rng, content, header_size)
            else:
                content, step = mutate_once(rng, content)
            steps.append(step)
        return (gzip.compress(content, mtime=0) if gz else content), steps

    def reference(self, case: Case):
        """(shape, array, affine) as numpy and nibabel read the file, after checking the gzip stream is intact."""
        data = case.path.read_bytes()
        if case.path.name.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except Exception as error:
                raise Wrong(f"accepted a damaged gzip stream ({type(error).__name__}: {error})") from error
        if case.path.suffix == ".npy":
            array = np.load(io.BytesIO(data), allow_pickle=False)
            return array.shape, array.astype(np.float32), np.eye(4)
        image = nib.load(case.path)
        needed = int(image.header.get_data_offset()) + int(np.prod(image.shape)) * image.get_data_dtype().itemsize
        if len(data) < needed:
            raise Wrong(f"accepted {len(data)} bytes, the header declares {needed}")
        return image.shape, image.get_fdata(dtype=np.float32), image.affine


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return tuple(shape)


def check_affine(affine: np.ndarray) -> None:
    affine = np.asarray(affine)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise Wrong(f"affine not a finite 4x4 matrix: {affine!r}")
    if not np.array_equal(affine[3], [0, 0, 0, 1]):
        raise Wrong(f"affine's last row is {affine[3]}")
    det = np.linalg.det(affine[:3, :3])
    if not np.isfinite(det) or abs(det) < 1e-6 or not np.isfinite(np.linalg.inv(affine)).all():
        raise Wrong(f"affine not invertible (det {det}): {affine!r}")


class ReadImageTarget(NiftiTarget):
    name = "read_image"
    reader = "brainlearn.io.read_image"

    def read(self, case: Case):
        from brainlearn.io import read_image

        case.info["canonical"] = case.info["rng"].random() < 0.3
        return read_image(case.path, canonical=case.info["canonical"])

    def check(self, case: Case, image) -> None:
        array = image.array
        if array.ndim != 3 or array.dtype != np.float32:
            raise Wrong(f"array of shape {array.shape} and type {array.dtype}, expected a 3D float32 array")
        if not np.isfinite(array).all() or array.min() == array.max():
            raise Wrong("accepted non-finite or constant voxels")
        check_affine(image.affine)
        shape, reference, affine = self.reference(case)
        reference = reference.reshape(_squeezed(shape))
        if case.info["canonical"]:
            same = sorted(array.shape) == sorted(reference.shape)
            same = same and np.array_equal(np.sort(array, axis=None), np.sort(reference, axis=None))
        else:
            same = array.shape == reference.shape and np.array_equal(array, reference)
            same = same and np.allclose(image.affine, affine)
        if not same:
            raise Wrong(f"voxels or affine differ from nibabel's read of the same file (shape {array.shape})")


class ReadMaskTarget(NiftiTarget):
    name = "read_mask"
    reader = "brainlearn.io.read_mask"

    def read(self, case: Case):
        from brainlearn.io import read_mask

        return read_mask(case.path)

    def check(self, case: Case, mask) -> None:
        array = mask.array
        if array.ndim != 3 or not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
            raise Wrong(f"mask of shape {array.shape} and type {array.dtype}, expected 3D labels >= 0")
        check_affine(mask.affine)
        shape, reference, _ = self.reference(case)
        if array.shape != _squeezed(shape) or not np.array_equal(array, np.rint(reference).reshape(array.shape)):
            raise Wrong("labels differ from nibabel's read of the same file")


class HeaderShapeTarget(NiftiTarget):
    name = "header_shape"
    reader = "brainlearn.io.header_shape"

    def read(self, case: Case):
        from brainlearn.io import header_shape

        return header_shape(case.path)

    def check(self, case: Case, shape) -> None:
        if len(shape) < 3 or any(type(n) is not int or n <= 0 for n in shape):
            raise Wrong(f"shape {shape}: expected at least 3 positive ints")
        if np.prod(shape, dtype=np.float64) > MAX_VOXELS:
            raise Wrong(f"shape {shape}: more than MAX_VOXELS accepted")
        if case.path.suffix == ".npy":
            declared = np.load(case.path, mmap_mode="r", allow_pickle=False).shape
        else:
            declared = nib.load(case.path).shape
        if tuple(declared) != tuple(shape):
            raise Wrong(f"shape {shape}, the header declares {declared}")


# ---------------------------------------------------------------------------------------------- tables and BIDS
def check_table(table: pd.DataFrame, *, files_under: Path | None = None) -> None:
    """The contract of :func:`brainlearn.data.tables.read_table`'s result."""
    from brainlearn.data.tables import DIAGNOSES, IMAGE_COLUMNS, SEXES, SPLITS, TABLE_COLUMNS

    if tuple(table.columns[: len(TABLE_COLUMNS)]) != TABLE_COLUMNS:
        raise Wrong(f"columns {list(table.columns)}")
    allowed = {"diagnosis": DIAGNOSES, "sex": SEXES, "split": SPLITS}
    keys = set()
    for row in table.to_dict("records"):
        if not isinstance(row["participant_id"], str) or not row["participant_id"]:
            raise Wrong(f"participant_id {row['participant_id']!r}")
        if not isinstance(row["session_id"], str) or not row["session_id"]:
            raise Wrong(f"session_id {row['session_id']!r}")
        key = (row["participant_id"], row["session_id"])
        if key in keys:
            raise Wrong(f"{key} twice")
        keys.add(key)
        for column, values in allowed.items():
            if row[column] is not None and row[column] not in values:
                raise Wrong(f"{column} {row[column]!r} accepted")
        age = row["age"]
        if not isinstance(age, float) or not (np.isnan(age) or 0 <= age <= 130):
            raise Wrong(f"age {age!r}")
        images = [row[column] for column in IMAGE_COLUMNS if row[column] is not None]
        if not images:
            raise Wrong(f"row {key} without an image")
        for path in images:
            if not isinstance(path, str) or not os.path.isabs(path) or not os.path.isfile(path):
                raise Wrong(f"image path {path!r} is not an existing absolute file")
            if files_under is not None and not Path(path).is_relative_to(files_under):
                raise Wrong(f"image path {path!r} outside {files_under}")
        for column in table.columns:
            value = row[column]
            if column != "age" and value is not None and not isinstance(value, str):
                raise Wrong(f"column {column} holds {value!r}")


class TableTarget(Target):
    name = "read_table"
    reader = "brainlearn.data.tables.read_table"
    text = True

    def make_seeds(self) -> dict[str, bytes]:
        return seeds.table_seeds(self.work)

    def read(self, case: Case):
        from brainlearn.data.tables import read_table

        return read_table(case.path, on_missing=case.info["rng"].choice(("error", "skip")))

    def check(self, case: Case, table) -> None:
        check_table(table)
        rows = case.path.read_bytes().count(b"\n") + case.path.read_bytes().count(b"\r") + 1
        if len(table) > rows:
            raise Wrong(f"{len(table)} rows from a file of at most {rows} lines")


ODD_NAMES = (
    "sub-", "sub-01 ", " sub-01", "sub-01\n", "sub-ü", "sub-01\t02", "ses-", "ses-x y", "sub-01.nii.gz",
    "sub-1\\2", "sub-%s", "sub-01_T1w.nii.gz", "anat", "pet", "x_T1w.nii.gz", ".sub-02", "sub-\udcff",
    "sub-01_T1w.nii.gz.nii", "sub-02_T1w.nii.gz ", "_T1w.nii", "sub-" + "x" * 200,
)  # fmt: skip


class BidsTarget(Target):
    name = "read_bids"
    reader = "brainlearn.data.bids.read_bids"

    def make_seeds(self) -> dict[str, bytes]:
        seeds.bids_seed(self.work / "seed")
        return {"bids": b""}

    def case(self, rng: random.Random, index: int) -> Case:
        root = self.work / "case"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(self.work / "seed", root)
        steps = [] if index == 0 else [self._mutate(rng, root) for _ in range(rng.choice((1, 1, 2, 3)))]
        return Case(index, "bids", steps, root, (str(root),), {"rng": rng})

    def _mutate(self, rng: random.Random, root: Path) -> str:
        paths = sorted(p for p in root.rglob("*") if p.name != "participants.tsv")
        path = rng.choice(paths)
        participants = root / "participants.tsv"
        op = rng.randrange(10)
        if op < 4 and participants.is_file():
            data, steps = mutate_any(rng, participants.read_bytes(), text=True)
            participants.write_bytes(data)
            return "participants.tsv: " + "; ".join(steps)
        if op == 4:
            _remove(path)
            return f"delete {path.relative_to(root)}"
        if op == 5:
            new = path.with_name(rng.choice(ODD_NAMES))
            if not new.exists():
                path.rename(new)
            return f"rename {path.relative_to(root)} to {new.name!r}"
        if op == 6:
            _remove(path)
            path.mkdir() if path.suffix else path.write_bytes(b"")
            return f"{path.relative_to(root)} becomes a {'folder' if path.suffix else 'file'}"
        if op == 7:
            link = path.parent / rng.choice(("sub-loop", "x_T1w.nii.gz", "ses-02"))
            if not link.exists() and not link.is_symlink():
                link.symlink_to(rng.choice((link.name, "missing", "..", str(root))))
            return f"symlink {link.relative_to(root)}"
        if op == 8:
            _remove(participants)
            participants.mkdir() if rng.random() < 0.5 else None
            return "participants.tsv removed or made a folder"
        folder = root / rng.choice(("sub-04", "sub-05/ses-01/anat", "sub-01/ses-03"))
        with contextlib.suppress(OSError):  # sub-01 may be a file by now
            folder.mkdir(parents=True, exist_ok=True)
        return f"add the empty folder {folder.relative_to(root)}"

    def read(self, case: Case):
        from brainlearn.data.bids import read_bids

        return read_bids(case.path)

    def check(self, case: Case, table) -> None:
        check_table(table, files_under=case.path)
        subjects = {p.name for p in case.path.glob("sub-*") if p.is_dir()}
        for participant_id in table["participant_id"]:
            if participant_id not in subjects:
                raise Wrong(f"participant {participant_id!r} has no sub-* folder")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -------------------------------------------------------------------------------------------------------- configs
class ConfigTarget(Target):
    """load_config with a mutated YAML file (80%) or a mutated ``key=value`` override (20%)."""

    name = "load_config"
    reader = "brainlearn.config.load_config"
    text = True

    def make_seeds(self) -> dict[str, bytes]:
        return seeds.config_seeds()

    def case(self, rng: random.Random, index: int) -> Case:
        if index < len(self.seeds) or rng.random() < 0.8:
            return super().case(rng, index)
        item = rng.choice(seeds.OVERRIDES)
        if rng.random() < 0.3:
            item = item.partition("=")[0] + "=" + self.seeds[rng.choice(sorted(self.seeds))].decode()
        item, steps = mutate_text(rng, item)
        return Case(index, "override", steps, self.work / "no-file", (f"override {item!r}",), {"override": item})

    def read(self, case: Case):
        from brainlearn.config import load_config

        if "override" in case.info:
            return load_config(seeds.CONFIG_DEFAULTS, overrides=[case.info["override"]])
        return load_config(seeds.CONFIG_DEFAULTS, path=case.path, path_keys=seeds.CONFIG_PATH_KEYS)

    def check(self, case: Case, config) -> None:
        _check_config(config, seeds.CONFIG_DEFAULTS, "")


def _check_config(config, defaults: dict, prefix: str) -> None:
    if not isinstance(config, dict) or set(config) != set(defaults):
        raise Wrong(f"section {prefix or '(top)'}: keys {sorted(map(str, config))}")
    for key, default in defaults.items():
        value, dotted = config[key], prefix + key
        if isinstance(default, dict):
            if default:
                _check_config(value, default, dotted + ".")
            elif not isinstance(value, dict):
                raise Wrong(f"{dotted}: {type(value).__name__}")
        elif default is not None and value is not None:
            if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
                raise Wrong(f"{dotted}: {type(value).__name__} for a {type(default).__name__} default")
            if isinstance(value, float) and not np.isfinite(value):
                raise Wrong(f"{dotted}: {value} accepted")


# ----------------------------------------------------------------------------------------------------- pair lists
class PairsTarget(Target):
    name = "read_pairs"
    reader = "brainlearn.data.pairs.read_pairs"

    def make_seeds(self) -> dict[str, bytes]:
        return seeds.pair_seeds()

    def mutate(self, rng: random.Random, seed_name: str, data: bytes) -> tuple[bytes, list[str]]:
        if len(data) > 4096:  # the deep and long seeds: mutate their start and end, not the repeated middle
            head, steps = mutate_bytes(rng, data[:512] + data[-512:])
            return head[:512] + data[512:-512] + head[512:], steps
        return mutate_any(rng, data, text=seed_name.endswith("_p0.pkl"))

    def read(self, case: Case):
        from brainlearn.data.pairs import read_pairs

        case.info["split"] = case.info["rng"].choice((None, "train", "test"))
        return read_pairs(case.path, split=case.info["split"])

    def check(self, case: Case, table) -> None:
        for row in table.to_dict("records"):
            if not isinstance(row["participant_id"], str) or not row["participant_id"]:
                raise Wrong(f"participant_id {row['participant_id']!r}")
            if row["t1"] is None and row["pet"] is None:
                raise Wrong(f"participant {row['participant_id']} without an image")
            if any(row[c] is not None and not isinstance(row[c], str) for c in ("t1", "pet")):
                raise Wrong(f"paths {row['t1']!r}, {row['pet']!r}")
            if row["diagnosis"] not in (None, "CN", "AD") or row["split"] != case.info["split"]:
                raise Wrong(f"diagnosis {row['diagnosis']!r}, split {row['split']!r}")


# ---------------------------------------------------------------------------------------------------- checkpoints
class CheckpointTarget(Target):
    """load_checkpoint on a mutated zip checkpoint: whatever it accepts must be the original, tensor for tensor."""

    name = "load_checkpoint"
    reader = "brainlearn.checkpoints.load_checkpoint"

    def make_seeds(self) -> dict[str, bytes]:
        import torch

        data = seeds.checkpoint_seed(self.work / "seed.ckpt")
        self.original = torch.load(self.work / "seed.ckpt", weights_only=True)
        return {"last.ckpt": data}

    def mutate(self, rng: random.Random, seed_name: str, data: bytes) -> tuple[bytes, list[str]]:
        return mutate_bytes(rng, data)

    def read(self, case: Case):
        from brainlearn.checkpoints import load_checkpoint

        return load_checkpoint(case.path)

    def check(self, case: Case, checkpoint) -> None:
        if not _same(checkpoint, self.original):
            raise Wrong("accepted a checkpoint that differs from the one written (a damaged record read silently)")


def _same(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.equal(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------------------------- cache
JSON_VALUES = (None, True, 0, -1, 1, 2**63, 1e308, "", "x", "float64", "object", "<f8", "V10", "S5", "uint8", "t1")
JSON_VALUES += ([], {}, [[]], ["t1"], ["t1", "t1"], [["a", "b"]], [1, 2], {"t1": "float16"})


class CacheTarget(Target):
    """Cache() on a finished cache (t1 and mask of three sessions) whose manifest.json or index.tsv is mutated."""

    name = "cache"
    reader = "brainlearn.data.cache.Cache"

    def make_seeds(self) -> dict[str, bytes]:
        from brainlearn.data.cache import build_cache

        folder = self.work / "images"
        seeds.nifti_seeds(folder)
        rows = []
        for k in range(3):
            rows.append(
                {"participant_id": f"sub-0{k}", "session_id": "ses-01", "diagnosis": "CN", "age": 70.0 + k}
                | {"sex": "F", "site": "A", "split": "train", "t2": None, "flair": None, "pet": None}
                | {"t1": str(folder / ("t1.nii.gz", "scaled_int16.nii.gz", "nifti2.nii.gz")[k])}
                | {"mask": str(folder / "mask.nii.gz")}
            )
        self.built = {}
        for dtype in ("float16", "uint8"):
            out = self.work / f"cache-{dtype}"
            build_cache(pd.DataFrame(rows), out, modalities=("t1", "mask"), dtype=dtype, progress=False)
            self.built[dtype] = out
        return {
            f"{dtype}/{name}": (out / name).read_bytes()
            for dtype, out in self.built.items()
            for name in ("manifest.json", "index.tsv")
        }

    def case(self, rng: random.Random, index: int) -> Case:
        names = sorted(self.seeds)
        seed_name = names[index] if index < len(names) else rng.choice(names)
        dtype, file = seed_name.split("/")
        folder = self.work / "case"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.built[dtype], folder)
        steps = []
        if index >= len(names):
            data = self.seeds[seed_name]
            if file == "manifest.json" and rng.random() < 0.6:
                data, steps = _mutate_json(rng, data)
            else:
                data, steps = mutate_any(rng, data, text=True)
            (folder / file).write_bytes(data)
            if rng.random() < 0.05:
                (folder / "t1.bin").write_bytes((folder / "t1.bin").read_bytes()[:-7])
                steps.append("t1.bin loses 7 bytes")
        return Case(index, seed_name, steps, folder, (str(folder),), {"rng": rng})

    def read(self, case: Case):
        from brainlearn.data.cache import Cache

        cache = Cache(case.path)
        volumes = []  # reading is part of opening: what a valid-looking index leads to
        for i in range(len(cache)):
            for m in cache.modalities:
                volumes.append((cache.shape(i, m), cache.read(i, m), cache.affine(i, m), cache.read_slice(i, m, 2, 0)))
        return cache, volumes

    def check(self, case: Case, result) -> None:
        cache, volumes = result
        if len(cache) != len(cache.index) or not set(cache.modalities) <= {"t1", "t2", "flair", "pet", "mask"}:
            raise Wrong(f"{len(cache)} sessions, index of {len(cache.index)}, modalities {cache.modalities}")
        for shape, array, affine, plane in volumes:
            if len(shape) != 3 or array.shape != tuple(shape) or plane.shape != tuple(shape[:2]):
                raise Wrong(f"volume of shape {array.shape}, index says {shape}")
            if not np.isfinite(array).all():
                raise Wrong("non-finite voxels")
            check_affine(affine)


def _mutate_json(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    """Replace, delete or add one value somewhere in a JSON document."""
    document = json.loads(data)
    node, path = document, []
    while isinstance(node, dict | list) and node and rng.random() < 0.7:
        key = rng.choice(sorted(node) if isinstance(node, dict) else range(len(node)))
        if not isinstance(node[key], dict | list) or rng.random() < 0.3:
            break
        node, path = node[key], [*path, key]
    if isinstance(node, dict):
        key = rng.choice([*sorted(node), "extra"])
    else:
        key = rng.randrange(len(node)) if node else None
    value = rng.choice(JSON_VALUES)
    if key is None or (isinstance(node, dict) and rng.random() < 0.2):
        node.pop(key, None) if isinstance(node, dict) else None
        step = f"delete {path + [key]}"
    else:
        node[key] = value
        step = f"{path + [key]} := {value!r}"
    return json.dumps(document).encode(), [step]


# ---------------------------------------------------------------------------------------------------------- DICOM
class DicomTarget(Target):
    """read_header never raises: it returns a Header, or None (counted as refused) for a file that is not a
    readable DICOM image."""

    name = "dicom_header"
    reader = "brainlearn.convert.dicom.read_header"

    def make_seeds(self) -> dict[str, bytes]:
        return seeds.dicom_seeds(self.work / "seeds")

    def mutate(self, rng: random.Random, seed_name: str, data: bytes) -> tuple[bytes, list[str]]:
        if seed_name.endswith(".gz") and rng.random() < 0.7:
            content, steps = mutate_bytes(rng, gzip.decompress(data))
            return gzip.compress(content, mtime=0), steps
        return mutate_bytes(rng, data)

    def read(self, case: Case):
        from brainlearn.convert.dicom import read_header

        header = read_header(case.path)
        return DECLINED if header is None else header

    def check(self, case: Case, header) -> None:
        texts = (header.modality, header.patient_id, header.study_uid, header.series_uid, header.description)
        if not all(isinstance(t, str) for t in texts) or not isinstance(header.rows, int):
            raise Wrong(f"header fields of unexpected types: {header!r}"[:300])
        if header.series_number is not None and not isinstance(header.series_number, int):
            raise Wrong(f"series number {header.series_number!r}")


TARGETS = {
    target.name: target
    for target in (
        ReadImageTarget,
        ReadMaskTarget,
        HeaderShapeTarget,
        TableTarget,
        BidsTarget,
        ConfigTarget,
        PairsTarget,
        CheckpointTarget,
        CacheTarget,
        DicomTarget,
    )
}
