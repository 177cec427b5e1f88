"""The storage seam: one small interface of meaningful operations that every backend implements.

Every state change is conditional: it is guarded by the statuses allowed in
``jobq.job.TRANSITIONS`` and, for worker writes, by the lease token; each reports whether it
happened. The contract suite in ``tests/contract`` runs unchanged against every backend.

Times are UNIX seconds passed in by the caller (``now``), so that the contract suite can drive a
fake clock and every backend uses the same one. On PostgreSQL across hosts this means hosts must
keep their clocks in sync (NTP); a lease of 30 s tolerates far more skew than NTP leaves.
"""

from __future__ import annotations

import dataclasses
import enum
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, overload

from jobq.job import Event, Job, JobStatus

#: ``stats`` counts finished jobs (COMPLETED, FAILED, CANCELLED) among at most this many of the
#: newest: an exact count of 10 million finished rows takes seconds on either backend, and a
#: counter row updated by every completion would serialise PostgreSQL's workers (and cost every
#: SQLite commit pages). PENDING and PROCESSING are always counted exactly (small partial indexes).
STATS_FINISHED_WINDOW = 20_000
#: ``latest_jobs`` with a finished status looks among at most this many of the newest finished jobs.
LATEST_FINISHED_WINDOW = 10_000
#: ``due_history`` reads at most this many of the newest finished jobs (with every PENDING and
#: PROCESSING one): its depth and waits are exact back to the oldest of them, and it says so.
DUE_HISTORY_SAMPLE_LIMIT = 20_000
#: ``purge`` deletes at most this many jobs (and their events) per transaction, the oldest first,
#: until none is left: one transaction for every finished job of 10,000,000 held SQLite's write
#: lock, which every worker needs, for the whole delete (and PostgreSQL returned every id at once).
PURGE_CHUNK_JOBS = 2_000
#: An operator's action (resubmit, cancel) handles at most this many jobs per transaction, in id
#: order (SQLite: ~50 µs a job, so 25 ms of the write lock), then the next ones: one transaction
#: for the 9,700,000 completed jobs of a 10,000,000-job store would have held that lock for minutes.
OPERATOR_CHUNK_JOBS = 500

Clock = Callable[[], float]
"""UNIX seconds now. Worker writes take a clock rather than a time and read it once the
transaction holds its lock: a write that waited for the lock (a stalled database, a writer frozen
mid-transaction) must not stamp a lease that was already expired when it committed."""


# Not frozen: a frozen dataclass sets each of its 13 fields through object.__setattr__, which made
# building one 4x slower (~1 us more per job, a tenth of a batch enqueue's CPU). Treat it as a value.
@dataclasses.dataclass(slots=True)
class NewJob:
    """A job to insert. ``payload_json`` is already serialised and size-checked by the facade."""

    payload_json: str
    queue: str
    task: str
    priority: int
    run_at: float
    max_attempts: int
    timeout: float | None = None
    idempotency_key: str | None = None
    key_scope: str = "all"
    """How long the key is held: ``"all"`` (until purged), ``"active"`` (while PENDING or
    PROCESSING) or ``"ttl"`` (until ``key_expires_at``)."""
    key_expires_at: float | None = None
    on_conflict: str = "return"
    """A held key: ``"return"`` the holder's id, or ``"raise"`` :class:`jobq.DuplicateJob`."""
    concurrency_key: str | None = None
    """Jobs of one key share their queue's per-key concurrency limit (docs/flow-control.md)."""
    policy_json: str | None = None
    """The retry policy the enqueue set (``jobq.retry.JobPolicy.to_json``); None: defaults."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """What a worker holds: the job id and the token it was handed at claim time."""

    job_id: int
    token: str
    worker_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    lease: Lease
    result_json: str | None = None
    note: str | None = None
    """Recorded in the completion's event (e.g. a cancel that came after the handler finished)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt. ``retry_at`` None means give up (FAILED); else back to PENDING then."""

    lease: Lease
    error: str
    retry_at: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """Per lease: ``alive`` False means the lease is lost; ``cancel_requested`` asks to stop."""

    job_id: int
    alive: bool
    cancel_requested: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of an operator action on one job."""

    job_id: int
    ok: bool
    status: JobStatus | None
    """The status after the action (or the one that made it illegal; None: no such job)."""
    message: str = ""
    held_by: int | None = None
    """A resubmit refused because another job holds this job's 'active' key: that job's id."""


class ActionResults(Sequence[ActionResult]):
    """An operator action's results, one per job in order, kept compact: a job id and a small
    code a job (12 bytes), each ``ActionResult`` made when read. A cancel of 1,000,000 PENDING
    jobs held 1,000,000 ActionResult objects: 160 MB in ``jobq cancel`` (1.6 GB at 10,000,000).
    The codes name the distinct rest of a result (ok, status, message, held_by): the jobs done
    share one, and a refusal whose message names its job has its own. Read-only, equal to any
    sequence of the same results (a list among them), and ``+`` another sequence of results;
    ``extend`` adds results at the end (the store gathers an action's chunks with it)."""

    __slots__ = ("_big", "_codes", "_ids", "_kinds", "_known")

    def __init__(self, results: Iterable[ActionResult] = ()) -> None:
        self._ids = array("q")
        self._codes = array("I")
        self._kinds: list[tuple[bool, JobStatus | None, str, int | None]] = []
        self._known: dict[tuple[bool, JobStatus | None, str, int | None], int] = {}
        # Ids past a 64-bit integer (an id no job can have, "not found"): by position, 0 in _ids.
        self._big: dict[int, int] = {}
        self.extend(results)

    def extend(self, results: Iterable[ActionResult]) -> None:
        ids, codes, kinds, known = self._ids, self._codes, self._kinds, self._known
        for r in results:
            kind = (r.ok, r.status, r.message, r.held_by)
            code = known.get(kind)
            if code is None:
                code = known[kind] = len(kinds)
                kinds.append(kind)
            try:
                ids.append(r.job_id)
            except OverflowError:
                self._big[len(ids)] = r.job_id
                ids.append(0)
            codes.append(code)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> ActionResult: ...

    @overload
    def __getitem__(self, index: slice) -> ActionResults: ...

    def __getitem__(self, index: int | slice) -> ActionResult | ActionResults:
        if isinstance(index, slice):
            return ActionResults(self._result(i) for i in range(*index.indices(len(self))))
        return self._result(range(len(self))[index])  # IndexError and negative indexes as a list's

    def _result(self, i: int) -> ActionResult:
        return ActionResult(self._big.get(i, self._ids[i]), *self._kinds[self._codes[i]])

    def __iter__(self) -> Iterator[ActionResult]:
        if self._big:
            yield from (self._result(i) for i in range(len(self)))
            return
        kinds = self._kinds
        for job_id, code in zip(self._ids, self._codes, strict=True):
            yield ActionResult(job_id, *kinds[code])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable as they are

    def __add__(self, other: Iterable[ActionResult]) -> ActionResults:
        # A copy of the arrays, not of the results: every action adds its "not found" ids this way.
        both = ActionResults()
        both._ids, both._codes = array("q", self._ids), array("I", self._codes)
        both._kinds, both._known, both._big = list(self._kinds), dict(self._known), dict(self._big)
        both.extend(other)
        return both

    def __radd__(self, other: Iterable[ActionResult]) -> ActionResults:
        both = ActionResults(other)
        both.extend(self)
        return both

    def __repr__(self) -> str:
        return f"ActionResults({list(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActionResults, (list(self),))


@dataclasses.dataclass(frozen=True, slots=True)
class QueueCopy:
    """What ``Queue.backup`` wrote, or what ``jobq.restore`` put in place (SQLite)."""

    path: str
    """The file written: the backup, or the restored queue."""
    jobs: int
    """The jobs it holds."""
    newest_id: int
    """Its newest job's id (0: none)."""
    size_bytes: int
    ids_above: int | None = None
    """Restore only: new jobs get ids above this, the newest id the replaced queue had handed
    out (None: no queue was there, or its file could not be read)."""
    replaced: str | None = None
    """Restore only: where the replaced queue's file was kept (None: there was none)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RescueResult:
    job_id: int
    outcome: str
    """``"rescued"`` (back to PENDING), ``"expired"`` (FAILED) or ``"cancelled"``."""
    previous_owner: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing, a count or a bulk action applies to. Empty means all."""

    statuses: tuple[JobStatus, ...] = ()
    queues: tuple[str, ...] = ()
    search: str | None = None
    """Case-insensitive substring of the payload text."""
    ids: tuple[int, ...] = ()
    tasks: tuple[str, ...] = ()
    error: str | None = None
    """Case-insensitive substring of the last error (jobs without one never match)."""
    created_after: float | None = None
    """Created at or after this UNIX time (each time bound is inclusive; None: unbounded)."""
    created_before: float | None = None
    finished_after: float | None = None
    """Finished (COMPLETED, FAILED or CANCELLED) at or after this time; unfinished jobs never match."""
    finished_before: float | None = None


SORT_FIELDS = (
    "id",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "priority",
    "attempts",
    "status",
    "run_at",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """A slice of a listing: keyset-friendly sort, limit and offset."""

    sort: str = "id"
    descending: bool = True
    limit: int = 100
    offset: int = 0
    window: int | None = None
    """List only the newest ``window`` matching jobs (by id) when more match (None: all). The page
    is then taken from those in its order, and ``list_page`` counts no further than ``window + 1``
    (a count above ``window`` means "more than that"). Bounds a list's cost at any table size: a
    sort by another column than id sorts every matching job, seconds at 10,000,000 (the manager)."""


class WorkerEnd(enum.StrEnum):
    """How a worker process ended, as recorded in its registry row (``workers.end_reason``)."""

    STOPPED = "stopped"
    """It shut down cleanly and said so itself."""
    CRASHED = "crashed"
    """A rescuer of the same process table found its pid gone without a goodbye (``kill -9``,
    a crash, an out-of-memory kill)."""
    LOST = "lost"
    """A rescuer heard nothing from it for ``LOST_AFTER_LEASES`` leases (killed on another host,
    frozen, cut off). A judgement, not a fact: a worker that heartbeats again is alive again."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One row of ``workers``: a worker process, unique per process start."""

    id: str
    name: str
    host: str
    pid: int
    queues: tuple[str, ...]
    started_at: float
    last_seen_at: float
    stopped_at: float | None = None
    current_jobs: tuple[int, ...] = ()
    jobs_done: int = 0
    jobs_failed: int = 0
    wake_address: str | None = None
    process_table: str | None = None
    """Which process table ``pid`` belongs to (``jobq.worker.rescuer.process_table_id``); None
    when unknown (rows of jobq before schema 2, platforms without ``/proc``). ``host`` is for display."""
    end_reason: WorkerEnd | None = None
    """How it ended once ``stopped_at`` is set; None while it runs, and for rows stopped by a jobq
    from before end reasons were recorded (shown as stopped)."""
    clock_skew: float | None = None
    """How far its host's clock was from the store's at its last measurement, in seconds
    (positive: ahead; ``Queue.clock_skew``), as of its last heartbeat. None when nothing was
    measured: SQLite (one host, one clock), a ``clock=`` of the caller's, rows of an older jobq."""
    clock_base: float | None = None
    """Its host's wall clock less its monotonic clock (``time.monotonic()``) at its last beat, in
    seconds: the same for every process of one boot of a host until the wall clock steps or the
    host sleeps. A worker starting on the host compares its own with it, to learn of a jump of the
    clock it did not run through (``StallWatch.stepped_before_start``). None: not measured (a
    ``clock=`` of the caller's, rows of an older jobq)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A stored schedule (``jobq.schedules.Schedule`` plus its state); times are UNIX seconds."""

    name: str
    task: str
    queue: str
    payload_json: str | None
    cron: str | None
    every: float | None
    zone: str
    priority: int
    catchup: str
    overlap: bool
    origin: str
    """``"code"`` (declared with ``@jobq.periodic``, stored by workers) or ``"api"``."""
    next_run_at: float
    last_run_at: float | None = None
    """The latest slot that was enqueued (or skipped by ``overlap=False``)."""
    last_job_id: int | None = None
    paused: bool = False
    paused_by: str | None = None
    """Who last paused or resumed it, and when (``paused_at``)."""
    paused_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class QueueControl:
    """A queue's flow control (docs/flow-control.md): whether it is paused, and its limits (None:
    no such limit). Enforced by the claim itself, across every worker and host."""

    queue: str
    paused: bool = False
    paused_by: str | None = None
    """Who last paused or resumed the queue, and when (``paused_at``)."""
    paused_at: float | None = None
    concurrency: int | None = None
    """At most this many jobs of the queue PROCESSING at once."""
    per_key: int | None = None
    """At most this many PROCESSING jobs per ``concurrency_key`` in the queue."""
    rate_count: int | None = None
    """At most ``rate_count`` claims admitted per ``rate_window`` seconds."""
    rate_window: float | None = None
    next_admit_at: float | None = None
    """Rate limit: no job of the queue is admitted before this time (its "theoretical arrival time")."""
    updated_by: str | None = None
    updated_at: float | None = None

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.per_key is not None or self.rate_count is not None

    @property
    def active(self) -> bool:
        """Paused or limited: the claim looks at the queue's controls before it takes a job."""
        return self.paused or self.limited


@dataclasses.dataclass(frozen=True, slots=True)
class ControlUpdate:
    """A change to a queue's controls: ``paused`` None keeps it; each limit named in ``limits``
    is set to its value here (None clears it), the others are kept."""

    paused: bool | None = None
    limits: frozenset[str] = frozenset()
    concurrency: int | None = None
    per_key: int | None = None
    rate_count: int | None = None
    rate_window: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ControlEvent:
    """One operator change to a queue's controls (the audit history)."""

    id: int
    queue: str
    at: float
    actor: str | None
    action: str
    """``pause``, ``resume`` or ``limits``."""
    detail: str | None
    """JSON: the limits after the change."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleAction:
    """One pause or resume of a schedule: the audit history (``Queue.schedule_history``)."""

    name: str
    action: str
    """``"pause"`` or ``"resume"``."""
    actor: str
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """What ops shows at a glance."""

    counts: dict[str, int]
    by_queue: dict[str, dict[str, int]]
    oldest_pending_at: float | None
    completed_last_minute: int
    failed_last_minute: int
    expired_leases: int
    due_by_queue: dict[str, int] = dataclasses.field(default_factory=dict)
    """Due PENDING jobs (``run_at`` reached) per queue that has any; the rest of PENDING is
    scheduled (delayed, or waiting for a retry)."""
    oldest_due_by_queue: dict[str, float] = dataclasses.field(default_factory=dict)
    """The ``run_at`` of the oldest due PENDING job per queue that has any."""
    retrying_by_queue: dict[str, int] = dataclasses.field(default_factory=dict)
    """Scheduled PENDING jobs that already had an attempt (waiting to retry), per queue that has any."""
    waiting_on_limit_by_queue: dict[str, int] = dataclasses.field(default_factory=dict)
    """Due PENDING jobs a pause or a limit holds back right now, per queue that has any: they stay
    PENDING and due (never failed or retried) and run once the queue admits them."""
    controls: dict[str, QueueControl] = dataclasses.field(default_factory=dict)
    """Each paused or limited queue's flow control (docs/flow-control.md)."""
    finished_window: int | None = None
    """None: every count is a total. Else the store holds more finished jobs than this, and the
    COMPLETED, FAILED and CANCELLED counts are of the newest ``finished_window`` of them (PENDING
    and PROCESSING are still totals): see ``common.STATS_FINISHED_WINDOW``."""

    @property
    def due(self) -> int:
        """Due PENDING jobs in all queues."""
        return sum(self.due_by_queue.values())

    @property
    def retrying(self) -> int:
        """PENDING jobs waiting to retry (a failed attempt, the next one not yet due)."""
        return sum(self.retrying_by_queue.values())

    @property
    def scheduled(self) -> int:
        """PENDING jobs not yet due: delayed, or waiting to retry."""
        return max(0, self.counts.get("PENDING", 0) - self.due)


@dataclasses.dataclass(frozen=True, slots=True)
class Bucket:
    """One time bucket of the history, for the ops charts."""

    start: float
    enqueued: int
    claimed: int
    completed: int
    failed: int
    depth: int
    """PENDING jobs (due and scheduled) at the end of the bucket (derived backwards from the current count)."""
    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None
    retried: int = 0
    """Attempts that failed and were scheduled to retry (``failed`` counts only final failures)."""


@dataclasses.dataclass(frozen=True, slots=True)
class QueueWait:
    """How long one queue's jobs waited for a worker: due (``max(created_at, run_at)``) to claimed."""

    claimed: int
    """Jobs of the queue claimed in the window (the sample)."""
    p50: float | None
    p95: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class DueHistory:
    """Due PENDING jobs over time and per-queue waits, derived from the job rows alone (no events).

    Each job counts with its latest due period only: from ``max(created_at, run_at)`` until it was
    claimed (``started_at``) or finished unclaimed (cancelled). Earlier attempts of a retried job
    are not in its row, so their waits are not counted.
    """

    since: float
    bucket_seconds: float
    covers_since: float
    """Depth and waits are exact from here on: ``since``, unless more than ``sample_limit`` jobs
    finished in the window, then the ``finished_at`` of the oldest of the newest ``sample_limit``."""
    sample_limit: int | None
    """None when every finished job of the window was read, else the limit that cut it."""
    due: list[int | None]
    """Due PENDING jobs at the end of each bucket (the last one: now); None before ``covers_since``."""
    waits: dict[str, QueueWait]
    """Per queue with a job claimed since ``covers_since``: those jobs' waits."""

    @property
    def starts(self) -> list[float]:
        """Each bucket's start time."""
        return [self.since + i * self.bucket_seconds for i in range(len(self.due))]


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """What a handler last reported of its run (``JobContext.progress``)."""

    job_id: int
    fraction: float | None
    message: str | None
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class QueueGauges:
    """The live part of one queue, read from the PENDING and PROCESSING partial indexes only."""

    pending_due: int = 0
    pending_scheduled: int = 0
    """PENDING with ``run_at`` in the future (retries waiting for their backoff, delayed jobs)."""
    oldest_due_at: float | None = None
    processing: int = 0
    processing_expired: int = 0
    """PROCESSING whose lease has run out (the rescuer will move them)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HistogramCounts:
    """Values counted in the store for one histogram: how many fall in each slot (slot ``i``:
    at most bound ``i`` and above the one before; the last slot: above every bound), and their
    sum (a negative value counts as 0)."""

    counts: tuple[int, ...]
    total: float


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionTotals:
    """The completed jobs of one queue between two completion cursors, summed in the store
    (``Backend.completion_totals``): how many, and their wait, run time and attempts."""

    completed: int
    wait: HistogramCounts
    """``started_at - run_at``: from due to the last claim."""
    run: HistogramCounts
    """``finished_at - started_at``: the last attempt's run time."""
    attempts: HistogramCounts


class EventTotals(NamedTuple):
    """One read of ``Backend.event_totals``: the events after a cursor up to ``cursor``."""

    cursor: int
    """The id of the last event this read covers (the cursor given when none)."""
    counts: dict[tuple[str, str], int]
    """Events of the kinds asked to be counted, by (queue, kind): no row each."""
    events: list[MetricEvent]
    """Every other event in the range, in id order, one each (with its job's queue and times)."""
    held_back: bool
    """Events newer than ``until`` were left for a later read."""


class HistogramBounds(NamedTuple):
    """The bucket bounds ``completion_totals`` counts against, each ascending."""

    wait: tuple[float, ...]
    run: tuple[float, ...]
    attempts: tuple[float, ...]


class MetricEvent(NamedTuple):
    """One event for the metrics exporter, with its job's queue and times (None: job purged).

    A named tuple, not a frozen dataclass: the exporter makes one per event and per completed
    job, and a frozen dataclass's ``__init__`` costs ~2 us for these fields, ~4x a tuple's."""

    id: int
    kind: str
    at: float
    attempt: int | None
    queue: str | None
    run_at: float | None
    started_at: float | None
    finished_at: float | None
    claimed_at: float | None = None
    """Set on an event that ended an attempt (a retry, a failure, a rescue...): when that attempt
    was claimed. Claims and completions are not events (issue 13): an exporter counts attempts
    when they end, and completions from ``completions_after``."""


class Backend(Protocol):
    """A job store. Every method is one short transaction; none holds a reader open."""

    url: str
    single_host: bool
    """True when every process using this store runs on this machine (SQLite): a worker whose
    pid is gone here has exited, so its jobs can be rescued before their leases expire."""
    clock_reading: tuple[float, float] | None
    """How far the store's clock was ahead of this host's when this handle was opened, and the
    round trip of that read, in seconds (``common.clock_offset_of``); None for a store on this
    host (``single_host``), whose clock is this host's. ``Queue`` corrects its default clock by
    it (``Queue.clock_offset``)."""
    generation: int
    """How many times this handle found its database replaced under it (SQLite's file removed or
    replaced by hand: ``StoreReplaced``) and moved on to what is there now; 0 on PostgreSQL."""

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> list[int]:
        """Insert jobs in one transaction; a known idempotency key returns the existing id.

        ``traces``: per job, the trace context to store with it (``jobq.observability.tracing``);
        given only while tracing is on, so an enqueue without it does no extra work."""
        ...

    def enqueue_in(
        self, conn: object, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()
    ) -> list[int]:
        """``enqueue`` inside the application's open transaction on ``conn`` (its own connection
        to this store: psycopg on PostgreSQL; apsw on the same SQLite file, stdlib sqlite3 only
        where it runs apsw's own SQLite library). Nothing is committed or rolled back here: the
        jobs exist, and workers are woken, only if the caller commits. ``traces`` as for
        ``enqueue`` (stored in the same transaction). ConfigError: a connection of the wrong
        kind, on another database, or with no transaction to join; StorageError: closed, or its
        transaction failed."""
        ...

    # -- workers ---------------------------------------------------------------------------
    def claim(self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock) -> list[Job]:
        """Hand out up to ``limit`` due PENDING jobs (priority, run_at, id order) with fresh leases.

        If the commit's outcome is unknown (the connection dropped after COMMIT was sent), the
        backend reads back what it handed out rather than leave claimed jobs unrun for a lease."""
        ...

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float, clock: Clock) -> list[HeartbeatResult]:
        """Extend each still-valid lease; refused ones are recorded as stale writes."""
        ...

    def complete(self, items: Sequence[Completion], clock: Clock, *, repeat: bool = False) -> list[bool]:
        """PROCESSING -> COMPLETED for each valid lease (group commit); False: refused, recorded.

        ``repeat``: this write was made before and its outcome is unknown (an error while it
        committed). One that had committed is then recognised (the job is in the target status
        with the same token) and reported True without writing or recording anything; without
        ``repeat`` a second write with the same lease is refused like any stale one. The same
        holds for ``fail``, ``release`` and ``ack_cancel``."""
        ...

    def complete_in(self, conn: object, items: Sequence[Completion], clock: Clock) -> list[bool]:
        """``complete`` inside the application's open transaction on ``conn`` (see ``enqueue_in``),
        fenced by each lease like every worker write: False means refused (the lease was lost),
        and the refusal is recorded in that same transaction."""
        ...

    def complete_and_claim(
        self,
        items: Sequence[Completion],
        clock: Clock,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        repeat: bool = False,
    ) -> tuple[list[bool], list[Job]]:
        """``complete(items)`` then ``claim(..., limit)`` in one transaction (one commit, not
        two); each part behaves as its own operation, ``repeat`` applying to the completions."""
        ...

    def fail(self, items: Sequence[Failure], clock: Clock, *, repeat: bool = False) -> list[JobStatus | None]:
        """PROCESSING -> PENDING (retry_at) or FAILED for each valid lease, or CANCELLED for a job
        to retry whose cancel an operator requested: the status each job was left in; None: refused."""
        ...

    def release(self, leases: Sequence[Lease], clock: Clock, reason: str, *, repeat: bool = False) -> list[bool]:
        """PROCESSING -> PENDING at once, attempt not counted (graceful shutdown)."""
        ...

    def ack_cancel(self, leases: Sequence[Lease], clock: Clock, *, repeat: bool = False) -> list[bool]:
        """PROCESSING (cancel requested) -> CANCELLED, by the worker that stopped the job."""
        ...

    def rescue_expired(
        self,
        clock: Clock,
        backoff: Callable[[int], float],
        actor: str,
        gone_owners: Sequence[str] = (),
        cutoff: Callable[[float], float] | None = None,
        attempts_limit: Callable[[str, str | None, int], int] | None = None,
    ) -> list[RescueResult]:
        """Move PROCESSING jobs whose lease expired back to PENDING (or FAILED / CANCELLED).

        Jobs leased to ``gone_owners`` (workers known to have exited) are moved at once, without
        waiting for their lease to run out; each move is conditional on the token read.
        ``cutoff`` maps the time read under the lock to the expiry before which a lease counts
        as lost (default: that time); the rescuer moves it back after a stall (see
        ``jobq.worker.stall``). ``attempts_limit(task, policy_json, stored)``: the job's
        max_attempts when it differs from the stored one (a worker's task defaults).
        """
        ...

    def next_due_at(self, queues: Sequence[str], now: float) -> float | None:
        """The earliest run_at among PENDING jobs of ``queues`` (for sleeping until then); ``now``
        weighs a rate limit's next admission (``jobq.flow.next_admission``)."""
        ...

    def newest_write(self) -> float | None:
        """The newest job's ``updated_at`` (UNIX seconds); None when there is no job, or its time
        is no finite number."""
        ...

    def restamp_ahead(self, now: float, step: float, ahead: float, actor: str) -> list[int]:
        """Make the PENDING jobs whose row was written more than ``ahead`` seconds after ``now``
        (and at most ``step + ahead``) as if written at ``now``: ``run_at`` moves back by as much,
        ``updated_at`` becomes ``now``, and each gets a ``restamped`` event by ``actor``. Their ids.
        For a clock set back by ``step`` since they were written (the worker's rescuer, SQLite):
        they would wait for the clock to catch up. Times that are no number are left alone."""
        ...

    # -- operators -------------------------------------------------------------------------
    def resubmit(self, where: JobFilter, actor: str, now: float) -> ActionResults:
        """FAILED / CANCELLED / COMPLETED -> PENDING for the jobs in ``where``."""
        ...

    def cancel(self, where: JobFilter, actor: str, now: float) -> ActionResults:
        """PENDING / FAILED -> CANCELLED; PROCESSING -> cancel requested."""
        ...

    def move(self, where: JobFilter, to: str, actor: str, now: float) -> ActionResults:
        """PENDING / FAILED / CANCELLED jobs in ``where`` moved to queue ``to`` (``jobq.job.MOVABLE``),
        each with a ``moved`` event; their statuses stay."""
        ...

    def purge(self, statuses: Sequence[JobStatus], finished_before: float, limit: int | None = None) -> int:
        """Delete finished jobs (and their events) of ``statuses`` finished before the cutoff, at
        most ``limit`` of them (None: all), those that finished first; returns how many."""
        ...

    # -- reads -----------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None: ...

    def get_after_writers(self, job_id: int) -> Job | None:
        """``get``, read once the transaction now writing the job (if any) has ended:
        ``Queue.wait``'s read (SQLite wakes from inside an application's transaction, before its
        COMMIT; on PostgreSQL a finish may have checked for waiters before one registered)."""
        ...

    def register_waiter(self, job_id: int, now: float, expires: float) -> int | None:
        """Say that someone waits for ``job_id`` until ``expires`` (UNIX seconds), before reading
        it: a backend whose finishing transactions wake only registered waiters (PostgreSQL)
        returns the registration to pass to ``unregister_waiter``; others return None."""
        ...

    def unregister_waiter(self, waiter: int | None) -> None:
        """The registration gone (best effort: one whose reply was lost is left to expire)."""
        ...

    def settle_waiters(self, now: float) -> bool:
        """Expired registrations deleted (their waiters crashed) and, once none is left, finishing
        transactions told that no one waits (PostgreSQL: they skip the waiters' check); True when
        they were told. The rescuer's, now and then; others return False."""
        ...

    def events(self, job_id: int) -> list[Event]: ...

    def list_jobs(self, where: JobFilter, page: Page) -> list[Job]: ...

    def count_jobs(self, where: JobFilter, up_to: int | None = None) -> int:
        """How many jobs match; with ``up_to``, at most that many (the count stops there, so it
        costs the same at any table size)."""
        ...

    def list_page(self, where: JobFilter, page: Page) -> tuple[int, list[Job]]:
        """How many jobs match and the page of them, read in one transaction (so they agree)."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs per status, every status present (0 when none)."""
        ...

    def stats(self, now: float, *, finished_window: int = STATS_FINISHED_WINDOW) -> QueueStats:
        """Counts per queue and status (finished ones among the newest ``finished_window``)."""
        ...

    def latest_jobs(self, status: JobStatus | None, limit: int) -> list[Job]:
        """The most recently updated jobs (of ``status``), newest first, in bounded time at any
        table size: PROCESSING jobs, the newest PENDING ones by id, and the newest finished
        ones by ``finished_at`` (for a finished status, among the newest
        ``LATEST_FINISHED_WINDOW`` finished jobs): what the ops page shows."""
        ...

    def history(self, since: float, bucket_seconds: float, now: float) -> list[Bucket]: ...

    def recent_events(self, limit: int, kinds: Sequence[str] = ()) -> list[Event]: ...

    def due_history(self, since: float, bucket_seconds: float, now: float, limit: int) -> DueHistory:
        """Due PENDING jobs at the end of each bucket since ``since`` and each queue's wait,
        from the job rows (every PENDING and PROCESSING one, the newest ``limit`` finished ones)."""
        ...

    # -- observability ---------------------------------------------------------------------
    def progress(self, lease: Lease, fraction: float | None, message: str | None, clock: Clock) -> HeartbeatResult:
        """Store a run's progress if ``lease`` still holds the job (fenced like a heartbeat;
        a refusal is recorded as a stale write)."""
        ...

    def progress_of(self, job_ids: Sequence[int]) -> dict[int, Progress]:
        """The last progress reported for each of ``job_ids`` that reported any."""
        ...

    def trace_contexts(self, job_ids: Sequence[int]) -> dict[int, str]:
        """The stored trace context of each of ``job_ids`` that has one."""
        ...

    def queue_gauges(self, now: float, backlog: bool = True) -> dict[str, QueueGauges]:
        """PENDING (due / scheduled, oldest due) and PROCESSING per queue; queues with neither
        are absent. Reads only the partial indexes: its cost follows the backlog, not history.
        ``backlog`` false: the PROCESSING part only (the PENDING fields left at 0 and None, queues
        without running jobs absent), for a reader that keeps the backlog of an earlier read."""
        ...

    def last_event_id(self, before: float | None = None) -> int:
        """The id of the newest event (0 when none), or of the newest one recorded before
        ``before``: where a metrics cursor starts."""
        ...

    def events_after(self, after_id: int, limit: int) -> list[MetricEvent]:
        """Up to ``limit`` events with ids above ``after_id``, in id order, with their job's queue."""
        ...

    def last_job_id(self, before: float | None = None) -> int:
        """The id of the newest job (0 when none), or of the newest one made before ``before``:
        where a metrics cursor over enqueues starts."""
        ...

    def enqueue_totals(self, after_id: int, until: float, limit: int) -> tuple[int, dict[str, int], bool]:
        """The next jobs after the job ``after_id`` (at most ``limit``, none made after
        ``until``), counted by queue: ``(the last id covered, {queue: jobs}, held back)``; the
        cursor given when none; held back: younger jobs were left for a later read. An enqueue
        stores no event (issue 13): the metrics exporter counts enqueues here, with no Python
        per job. Purged jobs are left out."""
        ...

    def completion_cursor(self, now: float) -> tuple[float, int]:
        """``(finished_at, id)`` of the newest job finished at or before ``now`` (``(0.0, 0)`` when
        none): where a cursor over completions starts."""
        ...

    def completions_after(self, after: tuple[float, int], until: float, limit: int) -> list[MetricEvent]:
        """Completed jobs after the cursor ``after`` (by ``(finished_at, id)``) that finished no
        later than ``until``, oldest first, at most ``limit``, as ``completed`` entries (``id`` is
        the job's). Read along ``jobs_finished``."""
        ...

    def event_totals(self, after_id: int, until: float, limit: int, counted: Sequence[str]) -> EventTotals:
        """The next events after ``after_id`` (at most ``limit``, none newer than ``until``):
        those whose kind is in ``counted`` as counts by queue and kind, the rest one each (see
        ``EventTotals``). Events whose job was purged are left out. The metrics exporter's
        fold: an ``enqueued`` event per job costs it no Python per job."""
        ...

    def completion_totals(
        self, after: tuple[float, int], until: float, limit: int, bounds: HistogramBounds
    ) -> tuple[tuple[float, int], dict[str, CompletionTotals]]:
        """What ``completions_after`` would return, summed per queue in the store: the cursor
        after the last job counted (``after`` when none) and the totals of each queue with any.
        The first ones ``completions_after`` gives, at most ``limit``, so a cursor can go on
        with either; when more than ``limit`` are left it may stop short of ``limit`` at a
        change of ``finished_at`` (no sort), so only an empty result means none are left. The
        metrics exporter's fold: no Python per completed job."""
        ...

    # -- worker registry -------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None: ...

    def worker_seen(
        self,
        worker_id: str,
        now: float,
        current_jobs: Sequence[int],
        done: int,
        failed: int,
        clock_skew: float | None = None,
        clock_base: float | None = None,
    ) -> bool:
        """Refresh the worker's row (``clock_skew``, ``clock_base``: as ``WorkerInfo``'s, now); False when
        there is none (deleted by hand, or the database file was replaced under a running worker):
        the worker then registers again."""
        ...

    def worker_stopped(self, worker_id: str, now: float, reason: WorkerEnd = WorkerEnd.STOPPED) -> None:
        """Mark the worker ended at ``now`` for ``reason``. A clean stop (the worker's own word)
        always wins; a rescuer's verdict (crashed, lost) only lands on a row not yet ended, and
        keeps the last heartbeat as it was."""
        ...

    def mark_lost_workers(self, seen_before: float, now: float) -> list[str]:
        """Mark every unended worker last seen before ``seen_before`` as ended ``lost`` at ``now``;
        return their ids. A lost worker that heartbeats again (``worker_seen``) is unended."""
        ...

    def prune_workers(self, stopped_before: float) -> list[str]:
        """Delete the rows of workers that ended (stopped, crashed, lost) before ``stopped_before``;
        return their ids. A running worker's row is never deleted."""
        ...

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        """Every unstopped worker and the newest ``limit`` stopped ones, newest start first."""
        ...

    def blockers(self) -> list[str]:
        """Who holds up the store's writes now, one line each with what to do (``Queue.blockers``):
        SQLite's holders of its write lock that are stopped or kept it a second while nobody
        committed, PostgreSQL's sessions that kept another waiting for a lock on the queue's
        tables; empty when nothing does."""
        ...

    # -- time ------------------------------------------------------------------------------
    def store_time(self) -> float:
        """The store's clock now, UNIX seconds: the database server's (PostgreSQL), this host's
        (SQLite). What ``Queue.sync_clock`` measures this host's clock against."""
        ...

    # -- schedules -------------------------------------------------------------------------
    def save_schedule(self, info: ScheduleInfo, now: float) -> None:
        """Insert or update a schedule by name; its state (next run, paused) is kept unless its
        timing changed, which takes ``info.next_run_at``."""
        ...

    def list_schedules(self, due_by: float | None = None) -> list[ScheduleInfo]:
        """Every schedule by name, or (``due_by``) the unpaused ones due by then."""
        ...

    def fire_schedule(
        self,
        name: str,
        expected: float,
        next_run_at: float,
        last_slot: float | None,
        jobs: Sequence[NewJob],
        now: float,
    ) -> list[int] | None:
        """Move ``name`` from slot ``expected`` to ``next_run_at`` and enqueue ``jobs``, in one
        transaction; None (nothing written) when it is no longer at ``expected`` or is paused."""
        ...

    def pause_schedule(self, name: str, paused: bool, actor: str, now: float, next_run_at: float | None) -> bool:
        """Pause or resume (recording who and when; a resume sets ``next_run_at``). False: no such schedule."""
        ...

    def delete_schedule(self, name: str) -> bool: ...

    # -- flow control ----------------------------------------------------------------------
    def update_control(self, queue: str, update: ControlUpdate, actor: str, now: float) -> QueueControl:
        """Pause, resume or change the limits of ``queue`` in one transaction, recording who and
        when in its history; wakes idle workers of the queue. Returns the controls after it."""
        ...

    def controls(self) -> list[QueueControl]:
        """Every queue that has controls (paused, limited, or once so), by name."""
        ...

    def control_history(self, queue: str | None, limit: int) -> list[ControlEvent]:
        """The newest changes to the controls of ``queue`` (None: of every queue), newest first."""
        ...

    def schedule_actions(self, name: str | None, limit: int) -> list[ScheduleAction]:
        """The latest pauses and resumes (of ``name``, or of every schedule), newest first; kept
        after the schedule is removed."""
        ...

    # -- maintenance -----------------------------------------------------------------------
    def backup(self, dest: str, *, compact: bool = False) -> QueueCopy:
        """A copy of the store as it stood at one commit, taken while it runs, written to the new
        file ``dest`` (SQLite; ``compact``: without free pages). PostgreSQL raises StorageError:
        its own tools copy a server."""
        ...

    # -- wake-up ---------------------------------------------------------------------------
    def listener(self, worker_id: str, queues: Sequence[str]) -> Listener:
        """A way for an idle worker to sleep until new work may be there."""
        ...

    def finish_waiter(self, job_id: int) -> Listener:
        """A way to sleep until job ``job_id`` may have finished (``Queue.wait``): woken after a
        commit that completed, failed for good or cancelled it. Best effort: callers poll too."""
        ...

    def close(self) -> None: ...


class Listener(Protocol):
    address: str | None

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when woken by a notification (work may be there)."""
        ...

    def close(self) -> None: ...
