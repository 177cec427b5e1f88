"""Launcher for the seed's command line: `python src/producer/producer.py` runs `jobq producer` (see jobq.producer).

Kept as a script path, not only `jobq producer`, so that the process list shows `src/producer/producer.py`
as in the seed (its step 8 looks consumers up by this command line).
"""

import sys
from pathlib import Path

# Run from a clone without installing: make <repo>/src importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobq.demo.producer import main

if __name__ == "__main__":
    sys.exit(main())
