"""Prometheus metrics: ``jobq metrics --port 9464`` (or ``jobq worker --metrics-port``).

Every scrape reads the store through the facade, with bounded cost at any number of stored jobs:

- gauges from the PENDING and PROCESSING partial indexes only (``Queue.queue_gauges``): jobs per
  queue (due vs scheduled), the oldest due job's age, running jobs and expired leases. Their cost
  follows the backlog, never the finished history (a full count by status of 10,000,000 rows
  is what ``jobq stats`` pays; the exporter does not). The PENDING part walks the whole backlog:
  when that read is costly and scrapes come often, it is read again only once its share of the
  time since stays under ``METRICS_BACKLOG_READ_SHARE`` (``jobq_backlog_gauges_age_seconds`` says
  how old the figures served are); the running jobs are read at every scrape;
- counters and histograms from what happened since the exporter started, folded in by a follower
  thread every second (and by the scrape itself, up to ``METRICS_EVENTS_PER_SCRAPE_MAX``):
  enqueues, attempts, retries, completions, failures, cancels, rescues, refused stale writes
  (lease lost), and wait / run time and attempts of each finished job. Three cursors: one over the
  events by primary key, one over completed jobs by ``(finished_at, id)`` along the finished-jobs
  index (``Queue.completion_totals``), one over the jobs by primary key for enqueues
  (``Queue.enqueue_totals``), since enqueues, claims and completions write no event (issue 13).
  The store sums what is one per completed job (completions by queue and histogram slot), and
  the kinds no counter reads (``Queue.event_totals``), so that part of the exporter's Python work
  does not grow with the jobs done; rarer events are read one each, enqueues one row per job.
  Attempts are counted when they end (an event that carries its claim, or a completion) plus the
  jobs running now beyond those running at the start, never less than last served. Like every
  Prometheus counter they start at 0 when the
  exporter starts; ``rate()`` and ``increase()`` handle that;
- worker liveness from the registry (``Queue.workers``), and each worker's host clock against the
  database server's (PostgreSQL).

Limits: on PostgreSQL, event ids (and completion times) are taken before they become visible at
commit, so a cursor could pass one whose transaction commits later; the exporter reads only events
and completions older than ``METRICS_EVENT_SETTLE_SECONDS_DEFAULT`` there (SQLite has one writer: ids follow commits, no
delay). Completions are read up to now on every store: one whose ``finished_at`` was written in
the future by hand is counted when that time comes, and does not hold back those before it.
Counters are per exporter: run one exporter per database (a worker's ``--metrics-port``
serves the same database-wide figures, so scrape one of them, or aggregate with ``max``).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from jobq.backends.base import HistogramBounds, HistogramCounts, QueueControl, QueueGauges
from jobq.config import METRICS_HOST_DEFAULT, METRICS_PORT_DEFAULT
from jobq.errors import StoreReplaced
from jobq.job import EventKind
from jobq.present import WorkerState, worker_state
from jobq.queue import Queue

METRICS_EVENTS_PER_READ = 5_000
METRICS_COMPLETIONS_PER_READ = 200_000
"""Most completed jobs one read sums up (the store counts them: ~0.3 s on SQLite at 200,000).
The follower's read takes a second of completions at once; one with more left than this is
read again, bounded (``Queue.completion_totals``): twice the work. So it stays above what
jobq completes in a follower's round at its peak (~50,000 jobs/s, issue 17)."""
METRICS_EVENTS_PER_SCRAPE_MAX = 10_000
"""Most events a scrape folds in itself when no follower runs (a collector used on its own, as
in tests): ~30 ms on SQLite, ~0.7 s on PostgreSQL, measured at 10,000,000 stored jobs."""
METRICS_FOLLOW_SECONDS_DEFAULT = 1.0
"""How often the exporter's follower thread folds new events in, between scrapes: a scrape then
reads the gauges and hands out counters already counted (a few ms at 10,000,000 stored jobs)."""
METRICS_FOLLOW_EVENTS_MAX = 200_000
"""Most events the follower folds in per round (then it yields the lock to a waiting scrape)."""
METRICS_BACKLOG_READ_SHARE = 0.005
"""Most of its time a costly backlog read may take: one that took 17 ms (100,000 pending jobs on
SQLite) is read again after 3.4 s, so scrapes every second serve it for about three of them; a
15 s scrape reads it every time. Bounds the exporter's cost at any backlog (issue 17)."""
METRICS_BACKLOG_READ_FREE_SECONDS = 0.005
"""A backlog read quicker than this is made at every scrape (a backlog of a few thousand jobs):
its figures are then never older than the scrape."""
METRICS_BACKLOG_STALE_MAX_SECONDS = 60.0
"""The backlog figures are read again after this long whatever their read costs."""
METRICS_EVENT_SETTLE_SECONDS_DEFAULT = 5.0
"""PostgreSQL only: events younger than this are left for the next scrape (see the limits)."""
WAIT_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
RUN_BUCKETS_SECONDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 5.0, 10.0, 25.0)
_BOUNDS = HistogramBounds(WAIT_BUCKETS_SECONDS, RUN_BUCKETS_SECONDS, ATTEMPT_BUCKETS)

log = logging.getLogger("jobq.metrics")

#: Event kind -> the counter it feeds (several kinds feed two: a rescue that fails the job).
_COUNTERS: dict[str, tuple[str, ...]] = {
    # No EventKind.ENQUEUED: enqueues are counted from the job rows (an older jobq's stored
    # `enqueued` event would count its job twice).
    EventKind.RESUBMITTED: ("resubmitted",),
    EventKind.RETRY_SCHEDULED: ("retries",),
    EventKind.FAILED: ("failures",),
    EventKind.EXPIRED: ("failures", "rescues"),
    EventKind.RESCUED: ("rescues",),
    EventKind.CANCELLED: ("cancelled",),
    EventKind.RELEASED: ("released",),
    EventKind.STALE_WRITE_REFUSED: ("lease_lost",),
    EventKind.RESTAMPED: ("restamped",),
    EventKind.MOVED: ("moved",),
    EventKind.EXTERNAL_UPDATE: ("external_updates",),
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
    "restamped": "Waiting jobs made as if written now after the host's clock was set back (SQLite)",
    "moved": "Jobs an operator moved into this queue from another (jobq move)",
    "external_updates": "Status changes made outside jobq (an UPDATE by hand), as its trigger recorded them",
}
_FINISHED = {EventKind.COMPLETED.value, EventKind.FAILED.value}
_NOT_COUNTED_AS_EVENTS = {EventKind.CLAIMED.value, EventKind.COMPLETED.value}
"""Kinds counted from job rows, never from stored events (a completion with a note is stored too;
an older jobq stored them all): each is counted once."""
_SUMMED_KINDS = (
    EventKind.ENQUEUED.value,
    EventKind.RESTAMPED.value,
    EventKind.EXTERNAL_UPDATE.value,
    *sorted(_NOT_COUNTED_AS_EVENTS),
)
"""Kinds whose events need no row of their own (no claim, no histogram): the store counts them
by queue. ``enqueued`` rows are an older jobq's (one per job), counted from the job rows now and
summed here only to be skipped cheaply."""


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

    def add(self, summed: HistogramCounts) -> None:
        """Values summed in the store (``Queue.completion_totals``) against these bounds."""
        self.total += summed.total
        for i, n in enumerate(summed.counts):
            self.counts[i] += n

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


@dataclasses.dataclass
class _Totals:
    counters: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    wait: dict[str, _Histogram] = dataclasses.field(default_factory=dict)
    run: dict[str, _Histogram] = dataclasses.field(default_factory=dict)
    attempts: dict[str, _Histogram] = dataclasses.field(default_factory=dict)
    queues: set[str] = dataclasses.field(default_factory=set)
    running_at_start: dict[str, int] = dataclasses.field(default_factory=dict)
    attempts_served: dict[str, int] = dataclasses.field(default_factory=dict)


def _histogram(table: dict[str, _Histogram], q: str, bounds: tuple[float, ...]) -> _Histogram:
    h = table.get(q)
    if h is None:  # not setdefault: that would build a histogram on every call
        h = table[q] = _Histogram(bounds)
    return h


class JobqCollector:
    """A ``prometheus_client`` collector over one ``Queue``: every scrape reads it afresh.

    Args:
        queue: the store to read (the exporter's own handle; it is only read).
        settle_seconds: leave events younger than this for the next scrape (default: 0 on a
            single-host store, ``METRICS_EVENT_SETTLE_SECONDS_DEFAULT`` on PostgreSQL).
        scrape_events: most events a scrape folds in itself (default
            ``METRICS_EVENTS_PER_SCRAPE_MAX``; ``serve`` says 0: its follower does it).
        backlog_share, backlog_free_seconds: how often a costly backlog read is made again
            (``METRICS_BACKLOG_READ_SHARE``, ``METRICS_BACKLOG_READ_FREE_SECONDS``).
    """

    def __init__(
        self,
        queue: Queue,
        *,
        settle_seconds: float | None = None,
        scrape_events: int | None = None,
        backlog_share: float = METRICS_BACKLOG_READ_SHARE,
        backlog_free_seconds: float = METRICS_BACKLOG_READ_FREE_SECONDS,
    ) -> None:
        self.queue = queue
        if settle_seconds is None:
            settle_seconds = 0.0 if queue.single_host else METRICS_EVENT_SETTLE_SECONDS_DEFAULT
        self.settle_seconds = settle_seconds
        self._lock = threading.Lock()  # two scrapes at once must not count an event twice
        self._cursor: int | None = None
        self._done_cursor: tuple[float, int] | None = None
        self._made_cursor = 0
        self._read_at: float | None = None  # the queue's time of the last fold that read the store
        self._replaced_after: float | None = None  # that time, when the file was found replaced
        self._totals = _Totals()
        self.scrape_events = METRICS_EVENTS_PER_SCRAPE_MAX if scrape_events is None else scrape_events
        if not backlog_share > 0:
            raise ValueError(f"backlog_share must be above 0, not {backlog_share!r}")
        self.backlog_share = backlog_share
        self.backlog_free_seconds = backlog_free_seconds
        self._backlog: dict[str, QueueGauges] = {}
        self._backlog_read_at: float | None = None  # time.monotonic() of the last backlog read
        self._backlog_cost = 0.0  # seconds that read took

    def follow(self, stop: threading.Event, interval: float = METRICS_FOLLOW_SECONDS_DEFAULT) -> None:
        """Fold new events in every ``interval`` seconds until ``stop`` is set (the exporter's
        thread): scrapes stay cheap however busy the queue is. An error is retried next round."""
        while not stop.wait(interval):
            try:
                with self._locked():
                    self._take_events(self.queue.clock(), METRICS_FOLLOW_EVENTS_MAX)
            except Exception as exc:  # noqa: BLE001 - the database away: the next round tries again
                log.warning("metrics: could not read new events: %s", exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The collector's lock. A database file replaced under the exporter (SQLite) starts the
        cursors over on the new file, from the last time the exporter read the old one: what the
        new file holds from before that is not counted (a restored backup's history), what it
        holds from since is (the jobs made in the second or two before the exporter noticed); the
        counters keep their totals (a counter never goes down). Kept, the cursors would stand at
        ids the new file has not reached, and every enqueue and event up to them would go
        uncounted."""
        with self._lock:
            try:
                yield
            except StoreReplaced:
                if self._cursor is not None:
                    self._replaced_after = self._read_at
                self._cursor = None
                self._backlog_read_at = None  # the backlog kept is the old file's: read anew
                raise

    def _take_events(self, now: float, budget: int) -> int:
        """Fold up to ``budget`` events after the cursor into the totals; returns how many are
        left behind."""
        if self._cursor is None:
            since = self._replaced_after  # None: the exporter's start (counters start there)
            self._cursor = self.queue.last_event_id(since)
            self._done_cursor = self.queue.completion_cursor(now if since is None else since)
            self._made_cursor = self.queue.last_job_id(since)
            running = self.queue.queue_gauges(backlog=False)
            self._totals.running_at_start = {q: g.processing for q, g in running.items()}
            self._replaced_after = None
        cutoff = now - self.settle_seconds
        left = self._take_completions(cutoff, budget) + self._take_enqueues(cutoff, budget)
        left += self._take_event_rows(cutoff, budget)
        self._read_at = now
        return left

    def _gauges(self) -> tuple[dict[str, QueueGauges], float]:
        """The gauges of this scrape and the age of their PENDING part (0: read now). Running jobs
        are read every time: the attempts counter is derived from them, and a stale count could
        push that counter past the truth, where it would stay (it never goes down)."""
        moment = time.monotonic()
        since = None if self._backlog_read_at is None else moment - self._backlog_read_at
        wait = 0.0 if self._backlog_cost < self.backlog_free_seconds else self._backlog_cost / self.backlog_share
        if since is None or since >= min(wait, METRICS_BACKLOG_STALE_MAX_SECONDS):
            gauges = self.queue.queue_gauges()
            self._backlog_cost = time.monotonic() - moment
            self._backlog_read_at = moment
            self._backlog = {q: g for q, g in gauges.items() if g.pending_due or g.pending_scheduled}
            return gauges, 0.0
        running = self.queue.queue_gauges(backlog=False)  # the PENDING fields at 0 and None
        merged = dict(running)
        for q, kept in self._backlog.items():
            now_running = running.get(q, QueueGauges())
            merged[q] = dataclasses.replace(
                kept, processing=now_running.processing, processing_expired=now_running.processing_expired
            )
        return merged, since

    def _observe_finished(self, q: str, e: Any) -> None:
        t = self._totals
        if e.started_at is not None:
            if e.run_at is not None:
                _histogram(t.wait, q, WAIT_BUCKETS_SECONDS).observe(e.started_at - e.run_at)
            if e.finished_at is not None:
                _histogram(t.run, q, RUN_BUCKETS_SECONDS).observe(e.finished_at - e.started_at)
            if e.attempt is not None:
                _histogram(t.attempts, q, ATTEMPT_BUCKETS).observe(e.attempt)

    def _count(self, name: str, q: str, n: int = 1) -> None:
        self._totals.counters[(name, q)] = self._totals.counters.get((name, q), 0) + n

    def _take_completions(self, cutoff: float, budget: int) -> int:
        """Fold in completed jobs after the completion cursor, summed by the store (one read
        per ``METRICS_COMPLETIONS_PER_READ`` of them, no Python per job: at 20,000 jobs/s reading
        each row cost the exporter 8 % of the workers' CPU); returns 1 if some were left."""
        assert self._done_cursor is not None
        # Never past now, also where nothing needs to settle: the cursor follows finished_at, so
        # one row dated in the future by hand would put it past every completion to come.
        until = cutoff
        t = self._totals
        taken = 0
        while taken < budget:
            self._done_cursor, totals = self.queue.completion_totals(
                self._done_cursor, _BOUNDS, METRICS_COMPLETIONS_PER_READ, until=until
            )
            n = 0
            for q, c in totals.items():
                n += c.completed
                t.queues.add(q)
                self._count("completed", q, c.completed)
                self._count("attempts_ended", q, c.completed)
                _histogram(t.wait, q, WAIT_BUCKETS_SECONDS).add(c.wait)
                _histogram(t.run, q, RUN_BUCKETS_SECONDS).add(c.run)
                _histogram(t.attempts, q, ATTEMPT_BUCKETS).add(c.attempts)
            if n == 0:  # a fold may end short of its limit with more left: only none means caught up
                return 0
            taken += n
        return 1 if budget else 0  # some left (how many is not counted: a read of its own)

    def _take_enqueues(self, cutoff: float, budget: int) -> int:
        """Fold in the jobs made after the job cursor; returns 1 if some were left."""
        until = cutoff if self.settle_seconds else math.inf
        taken = 0
        while taken < budget:
            start = self._made_cursor
            self._made_cursor, made, held_back = self.queue.enqueue_totals(start, METRICS_EVENTS_PER_READ, until=until)
            for q, n in made.items():
                self._totals.queues.add(q)
                self._count("enqueued", q, n)
            if held_back:
                return 1
            taken += self._made_cursor - start  # ids, not jobs: gaps count against the budget
            if self._made_cursor - start < METRICS_EVENTS_PER_READ:
                return 0
        return 1 if budget else 0

    def _take_event_rows(self, cutoff: float, budget: int) -> int:
        """Fold up to ``budget`` events after the cursor in; returns how many are left behind.
        The kinds in ``_SUMMED_KINDS`` are counted by the store, the rest read one each."""
        assert self._cursor is not None
        t = self._totals
        until = cutoff if self.settle_seconds else math.inf
        taken = 0
        while taken < budget:
            start = self._cursor
            read = self.queue.event_totals(start, _SUMMED_KINDS, METRICS_EVENTS_PER_READ, until=until)
            self._cursor = read.cursor
            for (q, kind), n in read.counts.items():
                t.queues.add(q)
                if kind not in _NOT_COUNTED_AS_EVENTS:
                    for name in _COUNTERS.get(kind, ()):
                        self._count(name, q, n)
            for e in read.events:
                if e.queue is None:  # its job was purged meanwhile: no queue to count it in
                    continue
                q = e.queue
                t.queues.add(q)
                if e.kind in _NOT_COUNTED_AS_EVENTS:
                    continue
                for name in _COUNTERS.get(e.kind, ()):
                    self._count(name, q)
                if e.claimed_at is not None:
                    self._count("attempts_ended", q)
                if e.kind in _FINISHED:
                    self._observe_finished(q, e)
            if read.held_back:
                return self.queue.last_event_id() - self._cursor
            taken += read.cursor - start
            if read.cursor - start < METRICS_EVENTS_PER_READ:
                return 0
        return self.queue.last_event_id() - self._cursor

    def describe(self) -> Iterator[Any]:
        return iter(())  # no describe-time reads: registering must not touch the database

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        started = time.perf_counter()
        with self._locked():
            now = self.queue.clock()
            gauges, backlog_age = self._gauges()
            behind = self._take_events(now, self.scrape_events)
            workers = self.queue.workers()
            t = self._totals
            # A queue once served keeps its series: one whose last job ran between the follower's
            # folds would otherwise drop out of every family until its counts were folded in
            # (served, gone, back), and its counters read as reset in between.
            t.queues.update(gauges.keys(), (q for w in workers if w.stopped_at is None for q in w.queues))
            queues = sorted(t.queues)

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
            yield from _control_gauges(self.queue.controls())

            for q in queues:
                # Attempts that ended, plus those running now that were not running at the start;
                # never less than served (a completion may be counted a moment after its row left
                # PROCESSING: the counter then holds until it is).
                g = gauges.get(q)
                begun = t.counters.get(("attempts_ended", q), 0) + (g.processing if g else 0)
                begun -= t.running_at_start.get(q, 0)
                t.attempts_served[q] = max(t.attempts_served.get(q, 0), begun)
                t.counters[("attempts", q)] = t.attempts_served[q]
            for name, text in _COUNTER_HELP.items():
                family = CounterMetricFamily(f"jobq_{name}", text, labels=["queue"])
                for q in queues:
                    family.add_metric([q], t.counters.get((name, q), 0))
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
            skew = GaugeMetricFamily(
                "jobq_worker_clock_skew_seconds",
                "Each running worker's host clock less the database server's, as last measured (PostgreSQL;"
                " jobq corrects 1 s or more, but the host's own logs and programs read its clock: fix its NTP)",
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
                if w.clock_skew is not None:
                    skew.add_metric([w.id, w.name, w.host], w.clock_skew)
            for (q, state_name), n in sorted(per_queue.items()):
                alive.add_metric([q, state_name], n)
            yield alive
            yield seen
            yield skew
            yield GaugeMetricFamily(
                "jobq_metrics_events_behind", "Events not yet counted (more than one scrape takes in)", value=behind
            )
            yield GaugeMetricFamily(
                "jobq_backlog_gauges_age_seconds",
                "Seconds since the PENDING gauges were read (0: at this scrape; a costly read is made"
                " less often than frequent scrapes)",
                value=backlog_age,
            )
            yield GaugeMetricFamily(
                "jobq_metrics_scrape_seconds",
                "Seconds this scrape spent reading the store",
                value=time.perf_counter() - started,
            )


def _control_gauges(controls: list[QueueControl]) -> Iterator[Any]:
    """Flow control (docs/flow-control.md): which queues are paused, and their limits, for the
    queues that have controls (one small read per scrape)."""
    from prometheus_client.core import GaugeMetricFamily

    paused = GaugeMetricFamily("jobq_queue_paused", "1 while the queue is paused (no claims)", labels=["queue"])
    limit = GaugeMetricFamily(
        "jobq_queue_limit",
        "A queue's flow-control limit: concurrency, per_key (running jobs), rate_per_second (claims)",
        labels=["queue", "kind"],
    )
    for c in controls:
        paused.add_metric([c.queue], 1 if c.paused else 0)
        if c.concurrency is not None:
            limit.add_metric([c.queue, "concurrency"], c.concurrency)
        if c.per_key is not None:
            limit.add_metric([c.queue, "per_key"], c.per_key)
        if c.rate_count is not None and c.rate_window:
            limit.add_metric([c.queue, "rate_per_second"], c.rate_count / c.rate_window)
    yield paused
    yield limit


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
