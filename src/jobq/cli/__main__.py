"""``python -m jobq.cli``: the ``jobq`` command, for when its console script is not on PATH."""

import sys

from jobq.cli import main

sys.exit(main())
