"""Launcher for the seed's command line: `python src/consumer/consumer.py [FLAGS]` is `jobq consumer [FLAGS]`.

Kept as a script path, not only `jobq consumer`, so that the process list shows `src/consumer/consumer.py`
as in the seed (its step 8 looks consumers up by this command line). It is the CLI, with the CLI's
one parser and exit codes: 0 stopped cleanly (SIGTERM or Ctrl-C), 1 an error, shown as one
`jobq: error: ...` line (database unreachable, a bad setting in the environment or jobq.toml),
2 bad usage (a flag's value, `jobq: error: consumer: ...`), 130 interrupted before the loop began.
"""

import sys
from pathlib import Path

# Run from a clone without installing: make <repo>/src importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobq.cli import main

if __name__ == "__main__":
    sys.exit(main(["consumer", *sys.argv[1:]]))
