"""The exceptions brainlearn raises for problems in the user's input or environment.

The CLI prints a :class:`BrainlearnError` as one readable line and exits non-zero; any other exception is a bug
and shows its traceback with ``--debug``.
"""


class BrainlearnError(Exception):
    """Bad input or environment: the message names the file or setting, the problem, and what to do."""


class DataLeakageError(BrainlearnError):
    """A participant appears in more than one split."""


class CacheMismatchError(BrainlearnError):
    """A cache does not match the table or settings it is used with; rebuild it with ``brainlearn cache``."""
