"""Helpers of the reliability suite: soak or short mode, a results recorder, and agent processes.

Short versions run in ``make test``; ``JOBQ_SOAK=1`` (``make soak``) runs the long versions and
appends one JSON line per test to ``RESULTS`` so that ``report.py`` can rewrite the table in
``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from children import stop_children

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
AGENTS = HERE / "agents.py"
SOAK = os.environ.get("JOBQ_SOAK") == "1"
#: Where soak runs append their figures (one JSON object per line); report.py reads it.
RESULTS = Path(os.environ.get("JOBQ_SOAK_RESULTS", str(REPO / "docs" / "reliability-results.jsonl")))


def scale(short: int, soak: int) -> int:
    """``short`` in ``make test``, ``soak`` under ``JOBQ_SOAK=1``."""
    return soak if SOAK else short


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of ``values``, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Recorder:
    """Prints a test's figures and, in soak mode, appends them to the results file."""

    def __init__(self, test: str) -> None:
        self.test = test

    def __call__(
        self,
        name: str,
        *,
        backend: str,
        jobs: int,
        faults: int,
        lost: int,
        duplicated: int,
        redelivered: int | None = None,
        reclaim_p50: float | None = None,
        reclaim_p99: float | None = None,
        integrity: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": name,
            "backend": backend,
            "mode": "soak" if SOAK else "short",
            "jobs": jobs,
            "faults": faults,
            "lost": lost,
            "duplicated": duplicated,
            "redelivered": redelivered,
            "reclaim_p50": None if reclaim_p50 is None else round(reclaim_p50, 3),
            "reclaim_p99": None if reclaim_p99 is None else round(reclaim_p99, 3),
            "integrity": integrity,
            "extra": extra,
            "test": self.test,
            "at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
        print(f"\n[reliability] {json.dumps(row)}", flush=True)
        if SOAK:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return row


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Recorder:
    return Recorder(request.node.nodeid)


def backend_name(url: str) -> str:
    return "postgres" if url.startswith("postgres") else "sqlite"


class Agents:
    """Starts ``agents.py`` roles as child processes and always stops them (by PID)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.out / f"agent-{len(self.started)}-{role}.log", "wb")  # noqa: SIM115 - closed below
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, str(AGENTS), role, *args], stdout=log, stderr=subprocess.STDOUT, env=full_env
        )
        log.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        stop_children(self.started)

    def logs(self, limit: int = 6000) -> str:
        text = "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace") for p in sorted(self.out.glob("agent-*.log"))
        )
        return text[-limit:]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    a = Agents(tmp_path)
    yield a
    a.stop_all()


Mount = Callable[[str], Path]
"""``tmpfs``: mounts a tmpfs of the size given (like ``2m``) and returns where."""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """Mount small tmpfs filesystems (``size`` like ``2m``); unmounted in the finalizer."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"fs-{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["mount", "-o", "remount,rw", str(where)], capture_output=True)
        subprocess.run(["umount", "-l", str(where)], check=True)
