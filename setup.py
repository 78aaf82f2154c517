"""Build hook: fetch NiiVue into the package before setuptools copies its files (metadata lives in pyproject.toml).

Both ``pip install .`` (wheel) and ``pip install -e .`` (PEP 660 editable) run ``build_py``, so either puts
``src/brainlearn/report/assets/niivue.umd.js`` in place. ``BRAINLEARN_NO_NIIVUE=1`` builds without it: reports
then show a note instead of the volume viewer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
NIIVUE = ROOT / "src" / "brainlearn" / "report" / "assets" / "niivue.umd.js"


class BuildWithNiivue(build_py):
    """``build_py`` that first fetches the pinned NiiVue script (tools/fetch_niivue.py)."""

    def run(self) -> None:
        if os.environ.get("BRAINLEARN_NO_NIIVUE") == "1":
            self.announce("BRAINLEARN_NO_NIIVUE=1: building without the report's volume viewer", level=3)
        elif (ROOT / "tools" / "fetch_niivue.py").is_file():
            sys.path.insert(0, str(ROOT / "tools"))
            from fetch_niivue import FetchError, ensure_niivue

            try:
                ensure_niivue(NIIVUE)
            except FetchError as error:
                sys.exit(f"error: {error}")
        elif not NIIVUE.is_file():  # an sdist carries the fetched script as package data, not the tool
            sys.exit(f"error: {NIIVUE} is missing and tools/fetch_niivue.py is not here to fetch it")
        self.__dict__.pop("data_files", None)  # list package data again, now with the fetched script
        super().run()


setup(cmdclass={"build_py": BuildWithNiivue})
