"""``python -m jobq``: the ``jobq`` command, for an environment whose scripts are not on PATH."""

import sys

from jobq.cli import main

if __name__ == "__main__":
    sys.exit(main())
