"""Seeded mutation fuzzing: the mutators, and the loop that runs one target and sorts what came out.

Every input is rebuilt from ``(seed, target, index)`` alone (``random.Random(f"{seed}:{target}:{index}")``), so
a failure found after a million inputs reruns by itself with ``campaign.py --targets T --start INDEX
--iterations 1``. Each input ends in one of:

* accepted: the reader returned a result and the target's oracle found it valid;
* refused: the reader raised :class:`BrainlearnError` and the message names the file (or, for a reader that
  declines by returning None, such as ``read_header``, returned None);
* crash: any other exception (``MemoryError`` and ``RecursionError`` included);
* hang: the reader ran past the time limit;
* wrong: a result the oracle found invalid (a silently wrong read), or a refusal that does not name the file.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import random
import resource
import shutil
import signal
import struct
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from brainlearn.errors import BrainlearnError

KINDS = ("accepted", "refused", "crash", "hang", "wrong")
FAILURES = ("crash", "hang", "wrong")
EXAMPLES_KEPT = 3  # inputs saved per failure signature

# Values that sit on the edges parsers get wrong, per width in bytes (AFL's list, unsigned).
INTERESTING = {
    1: (0, 1, 0x7F, 0x80, 0xFF),
    2: (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x100, 0x3FF),
    4: (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0x40000000),
    8: (0, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 2**40),
}
# Text that table, YAML and path parsers treat specially.
TOKENS = (
    "",
    " ",
    "n/a",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "131",
    "1e309",
    "9" * 5000,
    "0x1F",
    "1_000",
    "\t",
    ",",
    ";",
    '"',
    "'",
    '"a,b"',
    "\x00",
    "\r",
    "\n",
    "\r\n",
    "\ufeff",
    "é",
    "ß",
    "sub-01",
    "ses-01",
    "../../etc/passwd",
    "/",
    "CN",
    "AD",
    "cn",
    "M",
    "F",
    "train",
    "val",
    "{",
    "}",
    "[",
    "]",
    ":",
    "- ",
    "&a",
    "*a",
    "!!python/object/apply:os.system ['true']",
    "!!binary AAAA",
    "? ",
    "|",
    ">",
    "%YAML 1.1",
    "---",
    "...",
    "~",
    ".inf",
    ".nan",
    "2001-12-14",
    "null",
    "true",
    "yes",
    "<<: *a",
    "#",
    "%",
    "@",
    "`",
    "\\",
    "x" * 300,
)


class Hang(BaseException):
    """Raised by the alarm in the reader; a BaseException so that a reader's ``except Exception`` lets it pass."""


# What a target's ``read`` returns when the reader declined the input without raising (read_header's None).
DECLINED = object()


class Wrong(Exception):
    """Raised by an oracle: the reader accepted an input and returned something invalid."""


# ---------------------------------------------------------------------------------------------------- mutators
def flip_bit(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    bit = rng.randrange(len(data) * 8)
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out), f"flip bit {bit}"


def set_interesting(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    width = rng.choice([w for w in INTERESTING if w <= len(data)])
    value = rng.choice(INTERESTING[width])
    order = rng.choice("<>")
    at = rng.randrange(len(data) - width + 1)
    packed = struct.pack(order + {1: "B", 2: "H", 4: "I", 8: "Q"}[width], value)
    return data[:at] + packed + data[at + width :], f"set {width} bytes at {at} to {value:#x} ({order})"


def overwrite_random(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(data))
    n = min(rng.choice((1, 2, 4, 8, 32)), len(data) - at)
    return data[:at] + rng.randbytes(n) + data[at + n :], f"overwrite {n} bytes at {at}"


def delete_chunk(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(data))
    n = rng.randint(1, max(1, min(len(data) - at, rng.choice((1, 4, 16, 64, len(data) // 4 + 1)))))
    return data[:at] + data[at + n :], f"delete {n} bytes at {at}"


def duplicate_chunk(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(data))
    n = rng.randint(1, max(1, min(len(data) - at, 256)))
    to = rng.randrange(len(data) + 1)
    return data[:to] + data[at : at + n] + data[to:], f"copy {n} bytes from {at} to {to}"


def insert_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(data) + 1)
    chunk = rng.choice((rng.randbytes(rng.randint(1, 16)), b"\x00" * 8, b"\xff" * 8, rng.choice(TOKENS).encode()))
    return data[:at] + chunk + data[at:], f"insert {len(chunk)} bytes at {at}"


def truncate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    size = rng.choice((rng.randrange(len(data)), max(0, len(data) - rng.randint(1, 16)), rng.randrange(64)))
    size = min(size, len(data) - 1)
    return data[:size], f"truncate to {size} of {len(data)} bytes"


BYTE_MUTATORS: tuple[Callable[[random.Random, bytes], tuple[bytes, str]], ...] = (
    flip_bit,
    set_interesting,
    overwrite_random,
    delete_chunk,
    duplicate_chunk,
    insert_bytes,
    truncate,
)


def mutate_once(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One byte mutation (an insertion into empty data)."""
    return (rng.choice(BYTE_MUTATORS) if data else insert_bytes)(rng, data)


def mutate_bytes(rng: random.Random, data: bytes, *, most: int = 4) -> tuple[bytes, list[str]]:
    """Apply 1 to ``most`` byte mutations (fewer are likelier)."""
    steps = []
    for _ in range(_count(rng, most)):
        data, step = mutate_once(rng, data)
        steps.append(step)
    return data, steps


def mutate_text(rng: random.Random, text: str, *, most: int = 4) -> tuple[str, list[str]]:
    """Apply 1 to ``most`` line or token mutations to ``text`` (a table, a YAML file)."""
    steps = []
    for _ in range(_count(rng, most)):
        lines = text.split("\n")
        k = rng.randrange(len(lines))
        op = rng.randrange(7)
        if op == 0 and len(lines) > 1:
            step = f"delete line {k}"
            del lines[k]
        elif op == 1:
            step = f"repeat line {k}"
            lines.insert(rng.randrange(len(lines) + 1), lines[k])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[k], lines[j] = lines[j], lines[k]
            step = f"swap lines {k} and {j}"
        elif op == 3:
            cells = _split_cells(lines[k])
            c = rng.randrange(len(cells))
            token = rng.choice(TOKENS)
            cells[c] = token
            lines[k] = "".join(cells)
            step = f"line {k} cell {c} := {token[:20]!r}"
        else:
            at = rng.randrange(len(lines[k]) + 1)
            token = rng.choice(TOKENS)
            lines[k] = lines[k][:at] + token + lines[k][at:]
            step = f"insert {token[:20]!r} in line {k} at {at}"
        text = "\n".join(lines)
        steps.append(step)
    return text, steps


def mutate_any(rng: random.Random, data: bytes, *, text: bool) -> tuple[bytes, list[str]]:
    """Text mutations for text formats (most of the time), byte mutations otherwise or on top."""
    steps: list[str] = []
    if text and rng.random() < 0.75:
        mutated, steps = mutate_text(rng, data.decode("utf-8", errors="surrogateescape"))
        data = mutated.encode("utf-8", errors="surrogateescape")
        if rng.random() > 0.2:
            return data, steps
    data, more = mutate_bytes(rng, data)
    return data, steps + more


def _split_cells(line: str) -> list[str]:
    """A line cut into cells and the separators between them (tab, comma, semicolon, colon, space)."""
    cells, start = [], 0
    for i, char in enumerate(line):
        if char in "\t,;: ":
            cells += [line[start:i], char]
            start = i + 1
    return [*cells, line[start:]]


def _count(rng: random.Random, most: int) -> int:
    n = 1
    while n < most and rng.random() < 0.4:
        n += 1
    return n


# ------------------------------------------------------------------------------------------------- the campaign
@dataclass
class Case:
    """One fuzz input, written where the reader looks for it.

    Attributes:
        index: its number in the campaign (with the seed, all it takes to rebuild it).
        seed_name: the seed input it was mutated from.
        steps: the mutations applied, in order.
        path: the file or folder handed to the reader.
        names: text a refusal must contain (the file's path).
        info: whatever the target's oracle needs (e.g. whether the gzip stream is intact).
    """

    index: int
    seed_name: str
    steps: list[str]
    path: Path
    names: tuple[str, ...]
    info: dict = field(default_factory=dict)


@dataclass
class Failure:
    target: str
    index: int
    kind: str
    signature: str
    detail: str
    case: Case
    saved: Path | None = None


@dataclass
class Counts:
    """What one target's campaign found."""

    target: str
    tried: int = 0
    accepted: int = 0
    refused: int = 0
    crash: int = 0
    hang: int = 0
    wrong: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.crash + self.hang + self.wrong

    def as_dict(self) -> dict:
        counts = {kind: getattr(self, kind) for kind in ("tried", *KINDS)}
        signatures = sorted({(f.kind, f.signature) for f in self.failures})
        return {"target": self.target, **counts, "seconds": round(self.seconds, 1), "failures": signatures}


def run_target(
    target, *, iterations: int, seed: int, start: int = 0, timeout: float = 10.0, out: Path | None = None
) -> Counts:
    """Run inputs ``start`` .. ``start + iterations - 1`` of ``target``; save failing inputs under ``out``."""
    counts = Counts(target.name)
    began = time.monotonic()
    saved: dict[tuple[str, str], int] = {}
    with _quiet():
        for index in range(start, start + iterations):
            case = target.case(random.Random(f"{seed}:{target.name}:{index}"), index)
            kind, signature, detail = _run_one(target, case, timeout)
            counts.tried += 1
            setattr(counts, kind, getattr(counts, kind) + 1)
            if kind in FAILURES:
                failure = Failure(target.name, index, kind, signature, detail, case)
                n = saved.get((kind, signature), 0)
                if out is not None and n < EXAMPLES_KEPT:
                    failure.saved = _save(failure, seed, out)
                saved[(kind, signature)] = n + 1
                counts.failures.append(failure)
    counts.seconds = time.monotonic() - began
    return counts


def _run_one(target, case: Case, timeout: float) -> tuple[str, str, str]:
    """(kind, signature, detail) of one input."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    faulthandler.dump_traceback_later(3 * timeout, exit=True)  # a hang inside C code that the alarm cannot break
    try:
        result = target.read(case)
    except Hang:
        return "hang", f"over {timeout:g} s", traceback.format_exc()
    except BrainlearnError as error:
        message = str(error)
        if any(name in message for name in case.names):
            return "refused", "", message
        return "wrong", f"{type(error).__name__} without the file name", message
    except Exception as error:
        return "crash", _signature(error), traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)
    if result is DECLINED:
        return "refused", "", "declined"
    try:
        target.check(case, result)
    except Wrong as error:
        return "wrong", str(error).splitlines()[0][:120], str(error)
    return "accepted", "", ""


def _alarm(signum, frame):
    raise Hang()


def _signature(error: BaseException) -> str:
    """The exception type and the innermost brainlearn frame (else the innermost frame): one line per bug."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/brainlearn/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(error).__name__} at {where}"


def _save(failure: Failure, seed: int, out: Path) -> Path:
    folder = out / failure.target
    folder.mkdir(parents=True, exist_ok=True)
    source = failure.case.path
    saved = folder / f"{failure.kind}-{failure.index}-{source.name}"
    if source.is_dir():
        shutil.copytree(source, saved, symlinks=True, dirs_exist_ok=True)
    elif source.exists() or source.is_symlink():
        shutil.copy2(source, saved, follow_symlinks=False)
    repro = (
        f"python tests/fuzz/campaign.py --targets {failure.target} --seed {seed} --start {failure.index} --iterations 1"
    )
    text = [
        f"{failure.kind}: {failure.signature}",
        f"seed input: {failure.case.seed_name}",
        "mutations: " + "; ".join(failure.case.steps),
        f"reproduce: {repro}",
        "",
        failure.detail,
    ]
    saved.with_name(saved.name + ".txt").write_text("\n".join(text), encoding="utf-8", errors="replace")
    return saved


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warnings or log lines from the readers while fuzzing (they would flood the output)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)  # nibabel reports header fixes through logging
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


@contextlib.contextmanager
def memory_limit(gib: float | None) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``gib`` GiB, so that a reader allocating what a
    corrupt header declares fails with ``MemoryError`` (counted as a crash) instead of swapping."""
    if not gib:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = size + int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
