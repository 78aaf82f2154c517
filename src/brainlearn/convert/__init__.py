"""Scanner formats in: DICOM series (through dcm2niix), MGZ, MINC, NRRD, Analyze and ECAT to NIfTI.

- :func:`convert_folder` converts a folder (``brainlearn convert``) into a BIDS-like tree with ``series.tsv``
  (every series, converted or skipped, with the reason) and ``table.tsv`` (a participants table).
- :func:`convert_table_inputs` converts the non-NIfTI images a participants table points to (the first step of
  ``brainlearn preprocess``).

No name, birth date or address read from a header reaches an output or a log line; see
:mod:`brainlearn.convert.anonymity` for how participants are labelled.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConvertReport", "convert_folder", "convert_table_inputs"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI imports brainlearn.convert.command at start-up and must stay fast.
    if name in ("ConvertReport", "convert_folder"):
        from brainlearn.convert import pipeline

        return getattr(pipeline, name)
    if name == "convert_table_inputs":
        from brainlearn.convert.table_inputs import convert_table_inputs

        return convert_table_inputs
    raise AttributeError(f"module 'brainlearn.convert' has no attribute {name!r}")
