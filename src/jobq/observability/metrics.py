"""Prometheus metrics: ``jobq metrics --port 9464`` (or ``jobq worker --metrics-port``).

Every scrape reads the store through the facade, with bounded cost at any number of stored jobs:

- gauges from the PENDING and PROCESSING partial indexes only (``Queue.queue_gauges``): jobs per
  queue (due vs scheduled), the oldest due job's age, running jobs and expired leases. Their cost
  follows the backlog, never the finished history (a full count by status of 10,000,000 rows
  is what ``jobq stats`` pays; the exporter does not);
- counters and histograms from the events written since the exporter started, read by primary
  key after a cursor (``Queue.events_after``), folded in by a follower thread every second (and
  by the scrape itself, up to ``METRICS_EVENTS_PER_SCRAPE_MAX``):
  enqueues, attempts, retries, completions, failures, cancels, rescues, refused stale writes
  (lease lost), and wait / run time and attempts of each finished job. Like every Prometheus
  counter they start at 0 when the exporter starts; ``rate()`` and ``increase()`` handle that;
- worker liveness from the registry (``Queue.workers``).

Limits: on PostgreSQL, event ids are taken at insert but become visible at commit, so a cursor
could pass an id whose transaction commits later; the exporter reads only events older than
``METRICS_EVENT_SETTLE_SECONDS_DEFAULT`` there (SQLite has one writer: ids follow commits, no
delay). Counters are per exporter: run one exporter per database (a worker's ``--metrics-port``
serves the same database-wide figures, so scrape one of them, or aggregate with ``max``).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from jobq.config import METRICS_HOST_DEFAULT, METRICS_PORT_DEFAULT
from jobq.job import EventKind
from jobq.present import WorkerState, worker_state
from jobq.queue import Queue

METRICS_EVENTS_PER_READ = 5_000
METRICS_EVENTS_PER_SCRAPE_MAX = 10_000
"""Most events a scrape folds in itself when no follower runs (a collector used on its own, as
in tests): ~30 ms on SQLite, ~0.7 s on PostgreSQL, measured at 10,000,000 stored jobs."""
METRICS_FOLLOW_SECONDS_DEFAULT = 1.0
"""How often the exporter's follower thread folds new events in, between scrapes: a scrape then
reads the gauges and hands out counters already counted (a few ms at 10,000,000 stored jobs)."""
METRICS_FOLLOW_EVENTS_MAX = 200_000
"""Most events the follower folds in per round (then it yields the lock to a waiting scrape)."""
METRICS_EVENT_SETTLE_SECONDS_DEFAULT = 5.0
"""PostgreSQL only: events younger than this are left for the next scrape (see the limits)."""
WAIT_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
RUN_BUCKETS_SECONDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 5.0, 10.0, 25.0)

log = logging.getLogger("jobq.metrics")

#: Event kind -> the counter it feeds (several kinds feed two: a rescue that fails the job).
_COUNTERS: dict[str, tuple[str, ...]] = {
    EventKind.ENQUEUED: ("enqueued",),
    EventKind.RESUBMITTED: ("resubmitted",),
    EventKind.CLAIMED: ("attempts",),
    EventKind.RETRY_SCHEDULED: ("retries",),
    EventKind.COMPLETED: ("completed",),
    EventKind.FAILED: ("failures",),
    EventKind.EXPIRED: ("failures", "rescues"),
    EventKind.RESCUED: ("rescues",),
    EventKind.CANCELLED: ("cancelled",),
    EventKind.RELEASED: ("released",),
    EventKind.STALE_WRITE_REFUSED: ("lease_lost",),
}
_COUNTER_HELP = {
    "enqueued": "Jobs enqueued",
    "resubmitted": "Jobs resubmitted by an operator",
    "attempts": "Attempts started (claims)",
    "retries": "Failed attempts scheduled to run again",
    "completed": "Jobs completed",
    "failures": "Jobs that ended FAILED (attempts used up, or a lease expired on the last one)",
    "cancelled": "Jobs cancelled",
    "released": "Runs released back to PENDING at shutdown",
    "rescues": "Runs moved by the rescuer after their lease expired or their worker was gone",
    "lease_lost": "Worker writes refused because the lease was lost (stale writes)",
}
_FINISHED = {EventKind.COMPLETED.value, EventKind.FAILED.value}


class _Histogram:
    """Cumulative bucket counts and sum for one label value (what Prometheus wants)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        self.total += value
        # The first bound >= value (Prometheus' "le"); past the last one: the +Inf slot.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


@dataclasses.dataclass
class _Totals:
    kinds: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    """Events counted by (kind, queue); the scrape maps kinds to counters (``_COUNTERS``)."""
    wait: dict[str, _Histogram] = dataclasses.field(default_factory=dict)
    run: dict[str, _Histogram] = dataclasses.field(default_factory=dict)
    attempts: dict[str, _Histogram] = dataclasses.field(default_factory=dict)
    queues: set[str] = dataclasses.field(default_factory=set)


class JobqCollector:
    """A ``prometheus_client`` collector over one ``Queue``: every scrape reads it afresh.

    Args:
        queue: the store to read (the exporter's own handle; it is only read).
        settle_seconds: leave events younger than this for the next scrape (default: 0 on a
            single-host store, ``METRICS_EVENT_SETTLE_SECONDS_DEFAULT`` on PostgreSQL).
        scrape_events: most events a scrape folds in itself (default
            ``METRICS_EVENTS_PER_SCRAPE_MAX``; ``serve`` says 0: its follower does it).
    """

    def __init__(self, queue: Queue, *, settle_seconds: float | None = None, scrape_events: int | None = None) -> None:
        self.queue = queue
        if settle_seconds is None:
            settle_seconds = 0.0 if queue.single_host else METRICS_EVENT_SETTLE_SECONDS_DEFAULT
        self.settle_seconds = settle_seconds
        self._lock = threading.Lock()  # two scrapes at once must not count an event twice
        self._cursor: int | None = None
        self._totals = _Totals()
        self.scrape_events = METRICS_EVENTS_PER_SCRAPE_MAX if scrape_events is None else scrape_events

    def follow(self, stop: threading.Event, interval: float = METRICS_FOLLOW_SECONDS_DEFAULT) -> None:
        """Fold new events in every ``interval`` seconds until ``stop`` is set (the exporter's
        thread): scrapes stay cheap however busy the queue is. An error is retried next round."""
        while not stop.wait(interval):
            try:
                with self._lock:
                    self._take_events(self.queue.clock(), METRICS_FOLLOW_EVENTS_MAX)
            except Exception as exc:  # noqa: BLE001 - the database away: the next round tries again
                log.warning("metrics: could not read new events: %s", exc)

    def _take_events(self, now: float, budget: int) -> int:
        """Fold up to ``budget`` events after the cursor into the totals; returns how many are
        left behind."""
        if self._cursor is None:
            self._cursor = self.queue.last_event_id()  # counters start at the exporter's start
        cutoff = now - self.settle_seconds
        settle = bool(self.settle_seconds)
        t = self._totals
        # This loop runs once per event (about three per job on the normal path), so it does
        # the least it can: one dict update per event (counted by kind, mapped to counters at
        # scrape time), the histograms only for finished jobs (bench/overhead.py measures it).
        kinds, queues, finished = t.kinds, t.queues, _FINISHED
        cursor = self._cursor
        taken = 0
        try:
            while taken < budget:
                events = self.queue.events_after(cursor, METRICS_EVENTS_PER_READ)
                for e in events:
                    if settle and e.at > cutoff:
                        return self.queue.last_event_id() - cursor
                    cursor = e.id
                    q = e.queue
                    if q is None:  # its job was purged meanwhile: no queue to count it in
                        continue
                    key = (e.kind, q)
                    n = kinds.get(key)
                    if n is None:
                        n = 0
                        queues.add(q)
                    kinds[key] = n + 1
                    if e.started_at is not None and key[0] in finished:
                        self._observe_finished(q, e.run_at, e.started_at, e.finished_at, e.attempt)
                taken += len(events)
                if len(events) < METRICS_EVENTS_PER_READ:
                    return 0
            return self.queue.last_event_id() - cursor
        finally:
            self._cursor = cursor

    def _observe_finished(
        self, q: str, run_at: float | None, started_at: float, finished_at: float | None, attempt: int | None
    ) -> None:
        t = self._totals
        if run_at is not None:
            wait = t.wait.get(q) or t.wait.setdefault(q, _Histogram(WAIT_BUCKETS_SECONDS))
            wait.observe(started_at - run_at)
        if finished_at is not None:
            run = t.run.get(q) or t.run.setdefault(q, _Histogram(RUN_BUCKETS_SECONDS))
            run.observe(finished_at - started_at)
        if attempt is not None:
            attempts = t.attempts.get(q) or t.attempts.setdefault(q, _Histogram(ATTEMPT_BUCKETS))
            attempts.observe(attempt)

    def describe(self) -> Iterator[Any]:
        return iter(())  # no describe-time reads: registering must not touch the database

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        started = time.perf_counter()
        with self._lock:
            now = self.queue.clock()
            gauges = self.queue.queue_gauges()
            behind = self._take_events(now, self.scrape_events)
            workers = self.queue.workers()
            t = self._totals
            queues = sorted(t.queues | gauges.keys() | {q for w in workers if w.stopped_at is None for q in w.queues})

            pending = GaugeMetricFamily(
                "jobq_jobs_pending", "PENDING jobs: due now, or scheduled later", labels=["queue", "due"]
            )
            running = GaugeMetricFamily("jobq_jobs_processing", "PROCESSING jobs (running)", labels=["queue"])
            expired = GaugeMetricFamily(
                "jobq_jobs_lease_expired", "PROCESSING jobs whose lease ran out (to be rescued)", labels=["queue"]
            )
            oldest = GaugeMetricFamily(
                "jobq_oldest_due_age_seconds", "Age of the oldest due PENDING job (0 when none waits)", labels=["queue"]
            )
            for q in queues:
                g = gauges.get(q)
                pending.add_metric([q, "true"], g.pending_due if g else 0)
                pending.add_metric([q, "false"], g.pending_scheduled if g else 0)
                running.add_metric([q], g.processing if g else 0)
                expired.add_metric([q], g.processing_expired if g else 0)
                oldest.add_metric([q], max(0.0, now - g.oldest_due_at) if g and g.oldest_due_at is not None else 0.0)
            yield from (pending, running, expired, oldest)

            counters: dict[tuple[str, str], int] = {}
            for (kind, q), n in t.kinds.items():
                for name in _COUNTERS.get(kind, ()):
                    counters[(name, q)] = counters.get((name, q), 0) + n
            for name, text in _COUNTER_HELP.items():
                family = CounterMetricFamily(f"jobq_{name}", text, labels=["queue"])
                for q in queues:
                    family.add_metric([q], counters.get((name, q), 0))
                yield family
            for name, text, table in (
                ("jobq_job_wait_seconds", "Seconds a finished job waited from due to its last claim", t.wait),
                ("jobq_job_run_seconds", "Seconds the last attempt of a finished job ran", t.run),
                ("jobq_job_attempts", "Attempts a finished job used", t.attempts),
            ):
                h = HistogramMetricFamily(name, text, labels=["queue"])
                for q in sorted(table):
                    h.add_metric([q], table[q].buckets(), table[q].total)
                yield h

            alive = GaugeMetricFamily(
                "jobq_workers", "Registered worker processes not stopped, by state", labels=["queue", "state"]
            )
            per_queue: dict[tuple[str, str], int] = {
                (q, s.value): 0 for q in queues for s in (WorkerState.ALIVE, WorkerState.LOST)
            }
            seen = GaugeMetricFamily(
                "jobq_worker_last_seen_age_seconds",
                "Seconds since each running worker's last heartbeat",
                labels=["worker", "name", "host"],
            )
            heartbeat = self.queue.settings.heartbeat_seconds
            for w in workers:
                state = worker_state(w, now, heartbeat)
                if state in (WorkerState.STOPPED, WorkerState.CRASHED):  # ended: not a process any more
                    continue
                for q in w.queues:
                    per_queue[(q, state.value)] = per_queue.get((q, state.value), 0) + 1
                seen.add_metric([w.id, w.name, w.host], max(0.0, now - w.last_seen_at))
            for (q, state_name), n in sorted(per_queue.items()):
                alive.add_metric([q, state_name], n)
            yield alive
            yield seen
            yield GaugeMetricFamily(
                "jobq_metrics_events_behind", "Events not yet counted (more than one scrape takes in)", value=behind
            )
            yield GaugeMetricFamily(
                "jobq_metrics_scrape_seconds",
                "Seconds this scrape spent reading the store",
                value=time.perf_counter() - started,
            )


class Exporter:
    """A running exporter: the HTTP server and the follower thread. ``close()`` stops both."""

    def __init__(self, server: Any, stop: threading.Event, follower: threading.Thread) -> None:
        self.server = server
        self._stop = stop
        self._follower = follower

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._follower.join(timeout=30)


def serve(queue: Queue, port: int = METRICS_PORT_DEFAULT, host: str = METRICS_HOST_DEFAULT) -> Exporter:
    """Serve the metrics of ``queue`` over HTTP from daemon threads; ``close()`` the result to
    stop. Raises ConfigError without the ``metrics`` extra, OSError when the port is taken."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        from jobq.errors import ConfigError

        raise ConfigError("metrics need prometheus_client: pip install 'jobq[metrics]'") from None
    # The scrape reads only the gauges and the registry; the follower counts the events, so a
    # busy queue never makes a scrape slow (Prometheus times out at 10 s by default).
    collector = JobqCollector(queue, scrape_events=0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    stop = threading.Event()
    follower = threading.Thread(target=collector.follow, args=(stop,), name="jobq-metrics-follow", daemon=True)
    follower.start()
    return Exporter(server, stop, follower)
