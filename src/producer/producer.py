"""Launcher for the seed's command line: `python src/producer/producer.py [FLAGS]` is `jobq producer [FLAGS]`.

Kept as a script path, not only `jobq producer`, so that the process list shows `src/producer/producer.py`
as in the seed (its step 8 looks consumers up by this command line). It is the CLI, with the CLI's
one parser and exit codes: 0 stopped cleanly (SIGTERM or Ctrl-C), 1 an error, shown as one
`jobq: error: ...` line (database unreachable, a bad setting in the environment or jobq.toml),
2 bad usage (a flag's value, `jobq: error: producer: ...`), 130 interrupted before the loop began.
"""

import sys
from pathlib import Path

# Run from a clone without installing: make <repo>/src importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobq.cli import main

if __name__ == "__main__":
    sys.exit(main(["producer", *sys.argv[1:]]))
