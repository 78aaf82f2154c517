"""The ``brainlearn`` command: one subcommand per pipeline stage.

Every subcommand that does work takes ``--config FILE`` plus ``key=value`` overrides and writes one run folder
(see :mod:`brainlearn.runs`). Errors in the user's input print one line and exit with code 2; anything else is
a bug: exit code 1, and ``--debug`` shows the traceback. Heavy libraries are imported inside the commands so
that ``brainlearn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from brainlearn import __version__
from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # KEY=VALUE (a path such as runs/a=b/ has a slash before the =)


@dataclass(frozen=True)
class Command:
    """A subcommand that works: its defaults (which are its config keys) and the function that does the work.

    ``run(config, run)`` receives the resolved config and the open :class:`~brainlearn.runs.Run`; it returns the
    metrics to merge into ``metrics.json`` and logs what the user should look at.
    """

    name: str
    help: str
    defaults: dict[str, Any]
    run: Callable[..., dict[str, Any] | None]
    path_keys: tuple[str, ...] = ()
    options: tuple[tuple[str, str, dict[str, Any]], ...] = field(default=())  # (flag, config key, argparse kwargs)
    group: str | None = None  # "train" makes this `brainlearn train NAME`
    # where the run record goes when it is not config["out"] (e.g. synthesize --out names an image file)
    run_folder: Callable[[dict[str, Any]], str] | None = None

    @property
    def full_name(self) -> str:
        return f"{self.group} {self.name}" if self.group else self.name


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainlearn`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes KEY=VALUE overrides only in one run; those given between options arrive here.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.quiet)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        return args.handler(args) or 0
    except BrainlearnError as error:
        if args.debug:
            traceback.print_exc()
        _print_error(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        _print_error("interrupted; rerun the same command to resume.")
        return 130
    except Exception as error:  # a bug: say so plainly, show the traceback only on request
        if args.debug:
            raise
        _print_error(f"internal error: {type(error).__name__}: {error}\nRun again with --debug to see the traceback.")
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainlearn",
        description="Label-efficient deep learning on brain MRI and PET.",
        epilog="Run 'brainlearn COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"brainlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    from brainlearn.commands import COMMANDS, add_check_command
    from brainlearn.commands_train import GROUPS

    groups = {}
    for name, help_text in GROUPS.items():
        group = subparsers.add_parser(name, help=help_text, description=help_text)
        groups[name] = group.add_subparsers(title="subcommands", metavar="NAME")
        group.set_defaults(handler=lambda args, group=group: group.print_help() or 0)
    for command in COMMANDS:
        _add_work_command(groups[command.group] if command.group else subparsers, command)
    add_check_command(subparsers)
    return parser


def _add_work_command(subparsers, command: Command) -> None:
    keys = "\n".join(f"  {key} = {value!r}" for key, value in _flat(command.defaults).items())
    sub = subparsers.add_parser(
        command.name,
        help=command.help,
        description=command.help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config keys and their defaults (set them in --config FILE or as KEY=VALUE):\n{keys}",
    )
    sub.add_argument("--config", metavar="FILE", help="YAML config (its keys are listed below)")
    sub.add_argument("--out", metavar="DIR", help=f"run folder (default {command.defaults.get('out')})")
    sub.add_argument("--overwrite", action="store_true", help="continue in --out even if its saved config differs")
    for flag, key, kwargs in command.options:
        kwargs = {"metavar": key.split(".")[-1].upper(), **kwargs} if "choices" not in kwargs else kwargs
        if flag.startswith("-"):
            sub.add_argument(flag, dest=_dest(key), default=None, **kwargs)
        else:  # a positional (report's RUN_DIRs); KEY=VALUE items it swallows are moved to the overrides
            sub.add_argument(_dest(key), default=None, **kwargs)
    sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    sub.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    sub.set_defaults(handler=lambda args: _run_work_command(command, args))


def _run_work_command(command: Command, args: argparse.Namespace) -> int:
    from brainlearn.config import dump_config, load_config
    from brainlearn.runs import Run

    flags = {key: getattr(args, _dest(key)) for _, key, _ in command.options}
    for flag, key, _ in command.options:
        if not flag.startswith("-") and flags[key]:
            overrides = [item for item in flags[key] if _OVERRIDE.match(item)]
            flags[key] = [item for item in flags[key] if not _OVERRIDE.match(item)] or None
            args.overrides = [*overrides, *args.overrides]
    if args.out is not None:
        flags["out"] = args.out
    flags = {key: value for key, value in flags.items() if value is not None}
    config = load_config(
        command.defaults, path=args.config, flags=flags, overrides=args.overrides, path_keys=command.path_keys
    )
    if args.print_config:
        sys.stdout.write(dump_config(config))
        return 0
    root = command.run_folder(config) if command.run_folder else config["out"]
    with Run(root, command.full_name, config, overwrite=args.overwrite) as run:
        _seed(config)
        metrics = command.run(config, run)
        if metrics:
            run.write_metrics(metrics)
        log.info("run folder: %s", run.root)
    return 0


def _seed(config: dict) -> None:
    """Seed every random stream from the config's seed before the command builds anything.

    Networks draw their initial weights when they are built, before the trainer exists: without this, two runs
    of one config would start from different weights.
    """
    trainer = config.get("trainer")
    seed = trainer.get("seed") if isinstance(trainer, dict) else config.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        from lightning.fabric.utilities.seed import seed_everything

        seed_everything(seed, workers=True, verbose=False)


def _dest(key: str) -> str:
    return "opt_" + key.replace(".", "__")


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_time=False, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)  # the run's log.txt still gets INFO
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_error(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message, style="bold red", markup=False)


if __name__ == "__main__":
    sys.exit(main())
