"""Fuzz brainlearn's readers: ``python tests/fuzz/campaign.py --iterations N [--targets ...] [--seed S]``.

Prints, per target, the inputs tried and how many were accepted (a valid result), refused (a BrainlearnError
naming the file), crashed (any other exception), hung (past ``--timeout``) or were wrong (an invalid result
accepted, or a refusal that does not name the file). Exits with status 1 if any input crashed, hung or was
wrong, after printing each distinct failure with the command that reruns it; the failing inputs are kept under
``--out``. ``make fuzz`` runs the long campaign whose counts docs/reliability.md reports; tests/unit/
test_fuzz_readers.py runs a short one in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import memory_limit, run_target  # noqa: E402
from targets import TARGETS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="inputs per target (default 1000)")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first input index (to rerun one failure)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before an input counts as a hang")
    parser.add_argument("--memory-gib", type=float, default=3.0, help="address space allowed above the start")
    parser.add_argument("--out", type=Path, default=Path("runs/fuzz"), help="where failing inputs are kept")
    parser.add_argument("--json", type=Path, help="also write the counts as JSON here")
    args = parser.parse_args(argv)

    results = []
    print(f"{'target':<16}{'tried':>9}{'accepted':>10}{'refused':>9}{'crash':>7}{'hang':>6}{'wrong':>7}{'s':>8}")
    with tempfile.TemporaryDirectory(prefix="brainlearn-fuzz-") as work:
        for name in args.targets:
            target = TARGETS[name](Path(work))
            with memory_limit(args.memory_gib):
                counts = run_target(
                    target,
                    iterations=args.iterations,
                    seed=args.seed,
                    start=args.start,
                    timeout=args.timeout,
                    out=args.out,
                )
            results.append(counts)
            print(
                f"{name:<16}{counts.tried:>9}{counts.accepted:>10}{counts.refused:>9}{counts.crash:>7}"
                f"{counts.hang:>6}{counts.wrong:>7}{counts.seconds:>8.1f}",
                flush=True,
            )
    failures = [failure for counts in results for failure in counts.failures]
    _print_failures(failures, args.seed)
    if args.json:
        report = {
            "command": " ".join(["python tests/fuzz/campaign.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%d"),
            "seed": args.seed,
            "targets": [counts.as_dict() for counts in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if failures else 0


def _print_failures(failures, seed: int) -> None:
    """One paragraph per distinct failure (kind and where it happened): how often, and how to rerun it."""
    first: dict[tuple[str, str, str], list] = {}
    for failure in failures:
        first.setdefault((failure.target, failure.kind, failure.signature), []).append(failure)
    for (target, kind, signature), group in first.items():
        example = group[0]
        print(f"\n{kind.upper()} {target}: {signature} ({len(group)} inputs)")
        print(f"  seed input {example.case.seed_name}; mutations: {'; '.join(example.case.steps)[:300]}")
        print(f"  rerun: python tests/fuzz/campaign.py --targets {target} --seed {seed} --start {example.index} "
              "--iterations 1")  # fmt: skip
        if example.saved is not None:
            print(f"  input kept at {example.saved}")
        print("  " + example.detail.strip().splitlines()[-1][:300])


if __name__ == "__main__":
    sys.exit(main())
