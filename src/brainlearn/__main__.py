"""``python -m brainlearn`` is the ``brainlearn`` command."""

import sys

from brainlearn.cli import main

sys.exit(main())
