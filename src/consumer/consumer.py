"""Launcher for the seed's command line: `python src/consumer/consumer.py` runs `jobq consumer` (see jobq.consumer).

Kept as a script path, not only `jobq consumer`, so that the process list shows `src/consumer/consumer.py`
as in the seed (its step 8 looks consumers up by this command line).
"""

import sys
from pathlib import Path

# Run from a clone without installing: make <repo>/src importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobq.demo.consumer import main

if __name__ == "__main__":
    sys.exit(main())
