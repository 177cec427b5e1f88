"""What jobq creates is private: the SQLite database and its -wal/-shm 0600, directories 0700, as
long as the umask does not ask for less. Each case runs in a subprocess with its own umask (the
umask is per process: setting it here would leak into every other test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Creates the queue (and a producer's file) under argv[1] with the umask argv[2], then reports
# every mode while the connection is open (the -wal and -shm files exist only then).
_CREATE = """
import json, os, sys
os.umask(int(sys.argv[2], 8))
import jobq
from jobq.demo.files import new_job_file
root = sys.argv[1]
with jobq.Queue(f"sqlite:///{root}/data/deep/queue.db") as q:
    q.enqueue({"n": 1})
    new_job_file(f"{root}/files-root/data")
    names = ["data", "data/deep", "data/deep/queue.db", "data/deep/queue.db-wal", "data/deep/queue.db-shm",
             "files-root", "files-root/data", "files-root/data/files"]
    print(json.dumps({n: oct(os.stat(os.path.join(root, n)).st_mode & 0o777) for n in names}))
"""


@pytest.mark.parametrize("umask", ["022", "002", "077"])
def test_a_fresh_database_and_the_directories_jobq_creates_are_private(tmp_path: Path, umask: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CREATE, str(tmp_path), umask], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)
    assert modes == {
        "data": "0o700",
        "data/deep": "0o700",
        "data/deep/queue.db": "0o600",
        "data/deep/queue.db-wal": "0o600",  # SQLite copies the database file's mode
        "data/deep/queue.db-shm": "0o600",
        "files-root": "0o700",
        "files-root/data": "0o700",
        "files-root/data/files": "0o700",
    }
