"""The run folder: the one place a command writes to, and the unit that later commands read.

::

    RUN_DIR/
      config.yaml     the resolved config (defaults + file + overrides), written first
      log.txt         everything logged during the run, appended across resumes
      metrics.json    the numbers the run produced (merged, written atomically)
      checkpoints/    model weights (last.ckpt, best.ckpt)
      figures/        PNG figures
      logs/           CSV and TensorBoard training curves

Running a command again into the same folder with the same config resumes it; with another config it stops and
says what differs, unless ``overwrite`` is set (then the new config replaces the old one and files are kept).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from brainlearn.atomic import remove_stale_partials, write_error, write_json, write_text
from brainlearn.config import dump_config
from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Run:
    """A run folder for one command invocation.

    Args:
        root: the folder; created if missing.
        command: the command that owns it (``"cache"``, ``"train classify"``), recorded in the config.
        config: the resolved config.
        overwrite: replace a different saved config instead of refusing.
    """

    def __init__(self, root: str | os.PathLike, command: str, config: Mapping[str, Any], *, overwrite=False):
        self.root = Path(root)
        self.command = command
        self.config = dict(config)
        self.resumed = False
        self.overwrite = overwrite
        self._handler: logging.Handler | None = None
        self._claim(overwrite)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self._folder("checkpoints")

    @property
    def figures(self) -> Path:
        return self._folder("figures")

    def write_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``metrics`` into ``metrics.json`` (atomically) and return the merged dict."""
        merged = self.read_metrics()
        merged.update(metrics)
        write_json(self.metrics_path, merged)
        return merged

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.exists():
            return {}
        try:
            return json.loads(self.metrics_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise BrainlearnError(f"{self.metrics_path}: unreadable ({error}); move it aside and rerun.") from error

    def __enter__(self) -> Run:
        """Send log records to ``log.txt`` while the run is open."""
        self._handler = logging.FileHandler(self.log_path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._handler)
        package = logging.getLogger("brainlearn")
        if package.getEffectiveLevel() > logging.INFO:  # the log file keeps INFO even when the console is quiet
            package.setLevel(logging.INFO)
        verb = "resumed" if self.resumed else "started"
        log.info("brainlearn %s %s in %s", self.command, verb, self.root)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            log.error("brainlearn %s stopped: %s", self.command, exc)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def _claim(self, overwrite: bool) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(self.root, error) from error
        saved = self._saved_config()
        record = yaml.safe_load(dump_config({"command": self.command, **self.config}))
        if saved is not None:
            differences = _differences(saved, record)
            if differences and not overwrite:
                shown = "\n  ".join(differences[:10])
                raise BrainlearnError(
                    f"{self.root}: holds a run with another config:\n  {shown}\n"
                    "Pass another --out folder, or --overwrite to continue here with the new config."
                )
            self.resumed = not differences
            for path in remove_stale_partials(self.root):
                log.info("%s: removed, the unfinished write of an interrupted run", path)
        write_text(self.config_path, dump_config(record))

    def _saved_config(self) -> dict | None:
        if not self.config_path.exists():
            if any(p for p in self.root.iterdir() if not p.name.startswith(".")):
                log.warning("%s is not empty and holds no config.yaml; files there may be replaced", self.root)
            return None
        try:
            saved = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise BrainlearnError(f"{self.config_path}: unreadable ({error}). Move it aside and rerun.") from error
        return saved if isinstance(saved, dict) else {}

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(folder, error) from error
        return folder


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines
