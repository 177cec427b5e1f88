"""The worker registry: register, seen, stopped, lost, list, and the wake addresses of live workers."""

from __future__ import annotations

import json
from collections.abc import Sequence

from jobq.backends.base import WorkerEnd, WorkerInfo
from jobq.backends.common import worker_from_row
from jobq.backends.ops.core import Exec, Op
from jobq.backends.statements import Dialect


# -- worker registry ----------------------------------------------------------------------------
def register_worker(d: Dialect, info: WorkerInfo) -> Op[None]:
    yield Exec(
        d.sql["register_worker"],
        {
            "id": d.text(info.id),
            "name": d.text(info.name),
            "host": d.text(info.host),
            "pid": info.pid,
            "queues": json.dumps(list(info.queues)),
            "started_at": info.started_at,
            "last_seen_at": info.last_seen_at,
            "stopped_at": info.stopped_at,
            "current_jobs": json.dumps(list(info.current_jobs)),
            "jobs_done": info.jobs_done,
            "jobs_failed": info.jobs_failed,
            "wake_address": info.wake_address,
            "process_table": d.text(info.process_table),
            "clock_skew": info.clock_skew,
            "clock_base": info.clock_base,
        },
    )


def worker_seen(
    d: Dialect,
    worker_id: str,
    now: float,
    current_jobs: Sequence[int],
    done: int,
    failed: int,
    clock_skew: float | None = None,
    clock_base: float | None = None,
) -> Op[bool]:
    params = {
        "now": now,
        "current": json.dumps(list(current_jobs)),
        "done": done,
        "failed": failed,
        "skew": clock_skew,
        "base": clock_base,
    }
    return bool((yield Exec(d.sql["worker_seen"], {**params, "id": d.text(worker_id)})))


def worker_stopped(d: Dialect, worker_id: str, now: float, reason: WorkerEnd) -> Op[None]:
    yield Exec(d.sql["worker_stopped"], {"now": now, "id": d.text(worker_id), "reason": WorkerEnd(reason).value})


def lost_workers_probe(d: Dialect, seen_before: float) -> Op[bool]:
    """Is any worker to mark lost? A read, before ``mark_lost_workers`` (``store._probed`` says why)."""
    return bool((yield Exec(d.sql["lost_workers_probe"], {"before": seen_before})))


def mark_lost_workers(d: Dialect, seen_before: float, now: float) -> Op[list[str]]:
    rows = yield Exec(d.sql["mark_lost_workers"], {"now": now, "before": seen_before})
    return [str(r[0]) for r in rows]


def mark_lost_workers_again(d: Dialect, seen_before: float, now: float) -> Op[list[str]]:
    """``mark_lost_workers`` after a commit whose reply was lost: the marking again (a no-op if it
    committed), then every worker marked lost at ``now``, so the rescuer still names each one."""
    yield Exec(d.sql["mark_lost_workers"], {"now": now, "before": seen_before})
    rows = yield Exec(d.sql["workers_marked_lost_at"], {"now": now})
    return [str(r[0]) for r in rows]


def prune_workers_probe(d: Dialect, stopped_before: float) -> Op[bool]:
    """Is any ended worker's row to delete? A read, before ``prune_workers`` (as ``lost_workers_probe``)."""
    return bool((yield Exec(d.sql["prune_workers_probe"], {"before": stopped_before})))


def prune_workers(d: Dialect, stopped_before: float) -> Op[list[str]]:
    rows = yield Exec(d.sql["prune_workers"], {"before": stopped_before})
    return [str(r[0]) for r in rows]


def list_workers(d: Dialect, limit: int) -> Op[list[WorkerInfo]]:
    return [worker_from_row(r) for r in (yield Exec(d.sql["list_workers"], {"limit": limit}))]


def store_time(d: Dialect) -> Op[float]:
    """The store's clock now, UNIX seconds (the database server's on PostgreSQL)."""
    return float((yield Exec(d.sql["store_time"]))[0][0])


def live_wake_addresses(d: Dialect, seen_after: float) -> Op[list[str]]:
    return [str(r[0]) for r in (yield Exec(d.sql["live_wake_addresses"], {"seen_after": seen_after}))]
