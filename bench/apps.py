"""Render time of the manager and ops Streamlit apps on a database of many jobs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import make_payload

REPO = Path(__file__).resolve().parent.parent
APPS = {"manager": REPO / "src/jobq/web/manager.py", "ops": REPO / "src/jobq/web/ops.py"}


def _fill(url: str, jobs: int) -> None:
    """``jobs`` jobs in a realistic mix: mostly completed, some failed, some pending."""
    from jobq import Queue

    with Queue(url) as q:
        for start in range(0, jobs, 5_000):
            q.enqueue_many([make_payload(n) for n in range(start, min(jobs, start + 5_000))])
        done = int(jobs * 0.9)
        while done > 0:
            got = q.claim_many("bench-fill", min(1_000, done))
            if not got:
                break
            q.complete_many([(j, None) for j in got[: len(got) - len(got) // 20]])
            for j in got[len(got) - len(got) // 20 :]:
                q.fail(j, "bench: a failure for the failed list", retry=False)
            done -= len(got)


def measure_apps(workdir: str, jobs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Seconds for ``AppTest.from_file(app).run()`` per app (second run: warm), or a note."""
    out: dict[str, Any] = {"jobs": jobs}
    missing = [name for name, path in APPS.items() if not path.exists()]
    for name in missing:
        out[name] = "not measured: the app does not exist yet"
    if len(missing) == len(APPS):
        return out
    try:
        from streamlit.testing.v1 import AppTest
    except ImportError as exc:
        return {**out, **{n: f"not measured: {exc}" for n in APPS}}
    path = os.path.join(workdir, "apps.db")
    url = f"sqlite:///{path}"
    t0 = time.perf_counter()
    _fill(url, jobs)
    log(f"  filled {jobs:,} jobs in {time.perf_counter() - t0:.1f} s")
    old = os.environ.get("JOBQ_DATABASE_URL")
    os.environ["JOBQ_DATABASE_URL"] = url
    try:
        for name, app in APPS.items():
            if name in missing:
                continue
            try:
                times = []
                for _ in range(2):  # the first run also pays imports; report the warm one
                    at = AppTest.from_file(str(app), default_timeout=120)
                    t0 = time.perf_counter()
                    at.run()
                    times.append(time.perf_counter() - t0)
                    if at.exception:
                        raise RuntimeError(str(at.exception[0].message)[:200])
                out[name] = times[-1]
                out[f"{name} (cold)"] = times[0]
                log(f"  {name}: {times[-1]:.2f} s warm, {times[0]:.2f} s cold")
            except Exception as exc:  # noqa: BLE001 - an app that fails is a note, not a crash
                out[name] = f"error: {type(exc).__name__}: {exc}"[:200]
    finally:
        if old is None:
            os.environ.pop("JOBQ_DATABASE_URL", None)
        else:
            os.environ["JOBQ_DATABASE_URL"] = old
    return out
