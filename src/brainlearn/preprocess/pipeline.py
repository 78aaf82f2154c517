"""``brainlearn preprocess``: every session of a table through the steps, in parallel, resumable, with QC.

::

    OUT/
      <participant>/<session>/t1.nii.gz, flair.nii.gz, pet.nii.gz, mask.nii.gz   on the reference grid
      <participant>/<session>/t1_to_template.tfm, <image>_to_t1.tfm            transforms (to go back)
      <participant>/<session>/qc.png, done.json                                 done.json last: finished
      participants.tsv     the output table, ready for ``brainlearn cache``
      summary.tsv          every session's status, reason, QC numbers and seconds per step
      figures/contact_sheet.png

A session that fails is logged with its reason and left out; the others go on. Re-running skips sessions whose
``done.json`` exists. Every file is written atomically, so a killed run leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from brainlearn.atomic import atomic_path, write_json
from brainlearn.errors import BrainlearnError
from brainlearn.preprocess.subject import STEPS, SessionResult, preprocess_session

log = logging.getLogger(__name__)


def preprocess_table(
    table: pd.DataFrame,
    out: Path,
    settings: dict,
    *,
    jobs: int = 1,
    progress=True,
    failed: Sequence[tuple[str, str, str]] = (),
) -> pd.DataFrame:
    """Preprocess every row of ``table`` into ``out``; return the summary (one row per session).

    ``settings`` holds the ``preprocess`` command's keys: steps, spacing, shape, pad_to, normalize, suvr_reference.
    ``failed`` lists sessions that failed before preprocessing, (participant_id, session_id, reason), e.g. in
    conversion: they are reported in the summary with the others.
    """
    unknown = sorted(set(settings["steps"]) - set(STEPS))
    if unknown:
        raise BrainlearnError(f"unknown preprocessing step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}.")
    if not (table.empty and failed) and ("t1" not in table or table["t1"].isna().all()):
        raise BrainlearnError("preprocessing starts from the T1: the table has no t1 images.")
    rows = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in table.to_dict("records")]
    results = _run(rows, out, settings, jobs=jobs, progress=progress)
    results += [SessionResult(p, s, status="failed", reason=reason) for p, s, reason in failed]
    summary = _summary(results)
    with atomic_path(out / "summary.tsv") as tmp:
        summary.to_csv(tmp, sep="\t", index=False)
    _write_output_table(table, results, out)
    figures = [(f"{r.participant_id} {r.session_id}", Path(r.outputs["qc"])) for r in results if "qc" in r.outputs]
    if figures:
        from brainlearn.preprocess.qc import save_contact_sheet

        save_contact_sheet(figures, out / "figures" / "contact_sheet.png")
    return summary


def _run(rows: list[dict], out: Path, settings: dict, *, jobs: int, progress: bool) -> list[SessionResult]:
    from rich.progress import Progress

    results: list[SessionResult] = [None] * len(rows)  # type: ignore[list-item]
    with Progress(disable=not progress) as bar:
        task = bar.add_task("preprocessing", total=len(rows))
        if jobs <= 1:
            for i, row in enumerate(rows):
                results[i] = _session(row, out, settings)
                bar.advance(task)
            return results
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_one_thread) as pool:
            futures = {pool.submit(_session, row, out, settings): i for i, row in enumerate(rows)}
            for future in as_completed(futures):
                row = rows[futures[future]]
                try:
                    results[futures[future]] = future.result()
                except Exception as error:  # the worker died (killed, out of memory): that session failed
                    log.warning("skipped %s %s: its worker died (%s)", row["participant_id"], row["session_id"], error)
                    results[futures[future]] = SessionResult(
                        row["participant_id"], row["session_id"], status="failed", reason=f"worker died: {error}"
                    )
                bar.advance(task)
    return results


def _session(row: dict, out: Path, settings: dict) -> SessionResult:
    """One session, never raising for bad input: a failure becomes a result with its reason."""
    done = out / row["participant_id"] / row["session_id"] / "done.json"
    if done.exists():
        result = SessionResult(**json.loads(done.read_text(encoding="utf-8")))
        result.status = "done (earlier run)"
        return result
    try:
        result = preprocess_session(row, out, settings)
    except BrainlearnError as error:
        log.warning("skipped %s %s: %s", row["participant_id"], row["session_id"], error)
        return SessionResult(row["participant_id"], row["session_id"], status="failed", reason=str(error))
    except Exception as error:  # ITK or deepbet giving up on an odd scan must not end the run for the others
        log.warning("skipped %s %s: unexpected %s", row["participant_id"], row["session_id"], error, exc_info=True)
        reason = f"unexpected {type(error).__name__}: {error}".strip().splitlines()[0]
        return SessionResult(row["participant_id"], row["session_id"], status="failed", reason=reason)
    write_json(done, asdict(result))  # last: the session is complete
    return result


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"


def _summary(results: list[SessionResult]) -> pd.DataFrame:
    records = []
    for r in results:
        record = {
            "participant_id": r.participant_id,
            "session_id": r.session_id,
            "status": r.status,
            "reason": r.reason,
        }
        record |= {f"qc_{k}": v for k, v in r.qc.items()}
        record |= {f"seconds_{k}": round(v, 2) for k, v in r.seconds.items()}
        records.append(record)
    summary = pd.DataFrame(records)
    if "qc_similarity" in summary:  # flag registrations far below the run's typical similarity
        typical = summary["qc_similarity"].median()
        summary["qc_flag"] = summary["qc_similarity"] < typical - 0.15
    return summary


def _write_output_table(table: pd.DataFrame, results: list[SessionResult], out: Path) -> None:
    from brainlearn.data.tables import IMAGE_COLUMNS, write_table

    finished = {(r.participant_id, r.session_id): r.outputs for r in results if not r.status.startswith("failed")}
    rows = []
    for row in table.to_dict("records"):
        outputs = finished.get((row["participant_id"], row["session_id"]))
        if outputs is None:
            continue
        rows.append({**row, **{c: outputs.get(c) for c in IMAGE_COLUMNS}})
    write_table(pd.DataFrame(rows, columns=table.columns), out / "participants.tsv")
