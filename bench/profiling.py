"""Where jobq's claim+complete time goes: cProfile of the hot loop in one process."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
from typing import Any

from bench.core import make_payload


class _TimedConnection:
    """Wraps the backend's apsw connection to time each kind of statement (which cProfile lumps
    together as ``Connection.execute``): BEGIN, the claim UPDATE, the event INSERT, COMMIT..."""

    def __init__(self, conn: Any, times: dict[str, list[float]]) -> None:
        self._conn = conn
        self._times = times

    def _timed(self, method: str, sql: str, *args: Any) -> Any:
        key = " ".join(sql.split()[:6])[:48]
        t0 = time.perf_counter()
        try:
            return getattr(self._conn, method)(sql, *args)
        finally:
            entry = self._times.setdefault(f"{method}: {key}", [0.0, 0])
            entry[0] += time.perf_counter() - t0
            entry[1] += 1

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed("execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed("executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _loop(url: str, jobs: int, batched: bool, times: dict[str, list[float]] | None = None) -> float:
    from jobq import Queue

    with Queue(url) as q:
        q.enqueue_many([make_payload(n) for n in range(jobs)])
        if times is not None:  # instrument the (private) connection of the SQLite backend
            backend: Any = q.backend
            backend._conn = _TimedConnection(backend._connect(), times)
        t0 = time.perf_counter()
        if batched:
            while got := q.claim_many("profiler", 100):
                q.complete_many([(j, None) for j in got])
        else:
            while (job := q.claim("profiler")) is not None:
                q.complete(job)
        return jobs / (time.perf_counter() - t0)


def profile_jobq(workdir: str, jobs: int, top: int = 14) -> str:
    """A Markdown section: jobs/s with and without the profiler, and the top functions by own time."""
    out = []
    for label, sync, batched in (
        ("per-job API, FULL", "FULL", False),
        ("per-job API, NORMAL", "NORMAL", False),
        ("claim_many(100) + complete_many, FULL", "FULL", True),
    ):
        path = os.path.join(workdir, f"profile-{sync}-{int(batched)}.db")
        url = f"sqlite:///{path}" + ("" if sync == "FULL" else f"?synchronous={sync}")
        plain = _loop(url, jobs, batched)
        times: dict[str, list[float]] = {}
        try:
            timed = _loop(url.replace(".db", "-t.db"), jobs, batched, times)
        except Exception as exc:  # noqa: BLE001 - the breakdown is a bonus; the profile still runs
            times, timed = {"(statement timing failed: " + str(exc)[:80] + ")": [0.0, 0]}, 0.0
        path2 = path.replace(".db", "-p.db")
        url2 = f"sqlite:///{path2}" + ("" if sync == "FULL" else f"?synchronous={sync}")
        prof = cProfile.Profile()
        prof.enable()
        _loop(url2, jobs, batched)
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (file, line, func), (_cc, nc, tt, ct, _callers) in sorted(
            stats.stats.items(),
            key=lambda kv: kv[1][2],
            reverse=True,  # type: ignore[attr-defined]
        )[:top]:
            where = f"{os.path.basename(file)}:{line}({func})" if file != "~" else func
            rows.append(f"| `{where}` | {nc:,} | {tt:.3f} | {100 * tt / total:.0f}% | {ct:.3f} |")
        out += [
            f"**{label}**: {plain:,.0f} jobs/s unprofiled, one process, {jobs:,} jobs "
            f"(profiled total {total:.2f} s, claim loop + enqueue setup).",
            "",
            f"Per statement (wall time inside SQLite, instrumented run at {timed:,.0f} jobs/s; "
            f"per job = total / {jobs:,}):",
            "",
            "| statement | calls | total s | per job µs |",
            "|---|---:|---:|---:|",
            *[
                f"| `{k}` | {int(n):,} | {t:.3f} | {1e6 * t / jobs:.0f} |"
                for k, (t, n) in sorted(times.items(), key=lambda kv: -kv[1][0])[:8]
            ],
            "",
            "| function | calls | own s | own % | cumulative s |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    return "\n".join(out)
