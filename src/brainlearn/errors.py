"""The exceptions brainlearn raises for problems in the user's input or environment.

The CLI prints a :class:`BrainlearnError` as one readable line and exits non-zero; any other exception is a bug
and shows its traceback with ``--debug``.
"""

import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def quoted(value: object, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut to at most ``limit`` characters.

    A value read from a damaged or hostile file can be huge, nested thousands of levels deep, or (through YAML
    aliases or a pickle's memo) share its parts so that its full repr is exponentially long: printing it would
    hang. Nested values are shown 2 levels deep and 4 items wide.
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BrainlearnError(Exception):
    """Bad input or environment: the message names the file or setting, the problem, and what to do."""


class DataLeakageError(BrainlearnError):
    """A participant appears in more than one split."""


class CacheMismatchError(BrainlearnError):
    """A cache does not match the table or settings it is used with; rebuild it with ``brainlearn cache``."""
