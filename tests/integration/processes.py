"""Process helpers for integration tests: start workers/producers, count effects, stop what we started."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from children import stop_children

PROCS = Path(__file__).resolve().parent / "procs.py"


class Procs:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, *args: str, wrap: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``procs.py ARGS``; ``wrap`` is a command prefix (e.g. ``unshare ...``) that must
        end with the prefix's process when it is terminated: only its pid is stopped. ``env``:
        variables added to the process's environment."""
        index = len(self.started)
        log = open(self.out / f"proc-{index}.log", "wb")  # noqa: SIM115 - closed with the process
        env = {**os.environ, **(env or {}), "JOBQ_TEST_OUT": str(self.out), "PYTHONUNBUFFERED": "1"}
        cmd = [*wrap, sys.executable, str(PROCS), *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        stop_children(self.started)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.out.glob("proc-*.log")))


def effects(out: Path) -> list[int]:
    ids: list[int] = []
    for f in out.glob("*.effects"):
        ids.extend(int(line) for line in f.read_text().split())
    return ids
