"""The public facade: everything producers, workers, operators and the apps do with a queue.

>>> q = Queue("sqlite:///data/queue.db")          # doctest: +SKIP
>>> job_id = q.enqueue({"path": "data/files/a.txt"}, key="a.txt")
>>> job = q.claim("worker-1")
>>> q.complete(job)                                 # raises LeaseLost if the lease was lost
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from jobq.backends import check_copyable, open_backend, restore_store
from jobq.backends.base import (
    DUE_HISTORY_SAMPLE_LIMIT,
    ActionResult,
    ActionResults,
    Backend,
    Bucket,
    Completion,
    CompletionTotals,
    ControlEvent,
    ControlUpdate,
    DueHistory,
    EventTotals,
    Failure,
    HeartbeatResult,
    HistogramBounds,
    JobFilter,
    Lease,
    Listener,
    MetricEvent,
    NewJob,
    Page,
    Progress,
    QueueControl,
    QueueCopy,
    QueueGauges,
    QueueStats,
    RescueResult,
    ScheduleAction,
    ScheduleInfo,
    WorkerEnd,
    WorkerInfo,
)
from jobq.backends.common import build_completion, build_lease, build_new_job, clip, clock_offset_of
from jobq.backends.ops import TERMINAL_STATUSES as FINISHED
from jobq.config import (
    CLOCK_RETRY_SECONDS,
    CLOCK_SAMPLES,
    CLOCK_SKEW_CORRECTED_SECONDS,
    CLOCK_SYNC_SECONDS,
    DURATION_MAX_SECONDS,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    Settings,
    check_lease,
    load_settings,
    parse_duration,
    seconds_or,
)
from jobq.errors import (
    ConfigError,
    DuplicateJob,
    InvalidPayload,
    InvalidTransition,
    JobNotFound,
    LeaseLost,
    OutcomeUnknown,
    PayloadTooLarge,
    ScheduleNotFound,
    StorageError,
)
from jobq.flow import check_limit, check_rate, parse_rate
from jobq.job import Event, Job, JobStatus
from jobq.observability import tracing
from jobq.payloads import encode_json, encode_walked, is_printable, names_a_queue, walk
from jobq.redact import redact_url
from jobq.retry import (
    POLICIES,
    BackoffSpec,
    JobPolicy,
    backoff_seconds,
    backoff_spec,
    max_attempts_for,
    retry_on_names,
)
from jobq.schedules import Schedule, schedule_of

log = logging.getLogger("jobq.clock")

_CLOCK_OFFSET_KEPT_WITHIN_SECONDS = 0.05
"""A new measurement of the clock offset this close to the one in use keeps that one: half a round
trip of noise would otherwise move every time the queue stamps back and forth."""

#: ``Queue.wait`` reads the job at least this often, in case a wake-up was missed.
WAIT_POLL_SECONDS = 1.0
WAITER_ROW_SECONDS = 600.0
"""How long a waiter's registration lasts (PostgreSQL's ``job_waiters``); a longer wait renews it
halfway, and one a crashed waiter left expires."""

NAME_MAX_CHARS = 200
"""Longest queue name, task name or idempotency key accepted."""
ERROR_MAX_CHARS = 20_000
"""Most of an error message kept in ``last_error`` (head and tail; each event keeps less, see
``jobq.backends.common.EVENT_ERROR_MAX_CHARS``)."""
PROGRESS_MESSAGE_MAX_CHARS = 500
"""Longest progress message kept (head and tail)."""

SCHEDULE_HISTORY_LIMIT_DEFAULT = 50
"""Pauses and resumes that ``Queue.schedule_history`` returns unless asked for more."""

HISTORY_BUCKETS_MAX = 10_000
"""Most buckets ``history`` and ``due_history`` cut a window into (ops draws at most 96): a
bucket of 1e-6 s over an hour made billions of them, in memory."""


#: Names already checked (queue and task names repeat on every enqueue): a set lookup instead of
#: the checks. Bounded: a producer may make up names.
_CHECKED_NAMES: set[str] = set()
CHECKED_NAMES_MAX = 1024


def _check_name(value: str, what: str, *, remember: bool = True) -> str:
    """``value`` if it is a valid name, else InvalidPayload. ``remember``: a name that repeats
    (queues, tasks; not idempotency keys, each of which is new)."""
    if type(value) is str and value in _CHECKED_NAMES:
        return value
    if not isinstance(value, str) or len(value) > NAME_MAX_CHARS or not is_printable(value):
        raise InvalidPayload(f"{what} must be text of at most {NAME_MAX_CHARS} printable characters")
    if remember and type(value) is str and len(_CHECKED_NAMES) < CHECKED_NAMES_MAX:
        _CHECKED_NAMES.add(value)
    return value


KEY_SCOPES = ("all", "active")
"""``key_scope`` values: held until purged, or while the job is PENDING or PROCESSING."""
ON_CONFLICT_CHOICES = ("return", "raise")
"""``on_conflict`` values: hand back the holder's id, or raise DuplicateJob."""


def _when(now: float, delay: float | None, run_at: float | None) -> float:
    """When a new job is due: at ``run_at``, or ``delay`` seconds (a negative one: none) from now.

    Both are checked: a delay or run_at of infinity stored a job that never ran, a NaN delay
    meant no delay and a NaN run_at failed in the store with a NOT NULL error."""
    if run_at is not None:
        at = seconds_or(run_at, -1.0)
        if not 0 <= at <= now + DURATION_MAX_SECONDS:
            raise InvalidPayload(f"run_at must be a UNIX time in seconds, at most 100 years ahead, not {run_at!r}")
        return at
    seconds = seconds_or(delay, math.inf)
    if seconds > DURATION_MAX_SECONDS:
        raise InvalidPayload(f"delay must be a number of seconds, at most 100 years, not {delay!r}")
    return now + max(0.0, seconds)


def purge_cutoff(now: float, older_than: float) -> float:
    """Before when a job must have finished for ``purge(older_than=...)`` (ValueError unless 0 to
    100 years): NaN deleted nothing, and -inf (or any negative) every finished job, silently."""
    if not 0 <= seconds_or(older_than, -1.0) <= DURATION_MAX_SECONDS:
        raise ValueError(f"older_than must be a number of seconds from 0 to 100 years, not {older_than!r}")
    return now - older_than


def purged_statuses(statuses: Sequence[JobStatus | str]) -> list[JobStatus]:
    """``purge``'s statuses, each a finished one (ValueError otherwise: ``--status pending`` was
    taken, and would have deleted a PENDING row whose finished_at was set by hand)."""
    wanted = [status_of(s) for s in statuses]
    unfinished = [s.value for s in wanted if s.value not in FINISHED]
    if unfinished:
        raise ValueError(f"purge deletes finished jobs (COMPLETED, FAILED, CANCELLED), not {', '.join(unfinished)}")
    return wanted


def _purge_limit(limit: int | None) -> int | None:
    return None if limit is None else check_rows(limit, least=0)


def payload_list(payloads: Iterable[Any], what: str = "payloads") -> list[Any]:
    """``enqueue_many``'s payloads (or its ``keys``, ``concurrency_keys``) as a list, or
    InvalidPayload: a string or a mapping is one value, not a list of them
    (``enqueue_many("abc")`` made three jobs "a", "b" and "c"; ``keys="ab"`` two keys)."""
    return _item_list(payloads, "enqueue_many", what, InvalidPayload)


def job_id_or_none(value: object) -> int | None:
    """``value`` if a job can have it as its id (1 to 2**63-1), None for a whole number no job
    can have; ValueError for anything else (``cancel("1")`` was taken as job 1 by SQLite's type
    affinity, ``get(True)`` as job 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a job id is a whole number, not {value!r:.40}")
    return value if 0 < value <= INT64_MAX else None


def check_worker_id(worker_id: str) -> str:
    """A claim's worker id, checked as a name (a number was stored as the lease owner)."""
    return _check_name(worker_id, "worker id")


#: Queue names already checked by ``check_queue_name``: a set lookup on every enqueue instead of
#: two more calls (``tests/integration/test_python_costs.py`` counts them).
_CHECKED_QUEUES: set[str] = set()


def check_queue_name(value: str, what: str = "queue name") -> str:
    """``value`` if it can name a queue (``_check_name`` and ``payloads.names_a_queue``), else
    InvalidPayload."""
    if type(value) is str and value in _CHECKED_QUEUES:
        return value
    name = _check_name(value, what)
    if not names_a_queue(name):
        raise InvalidPayload(f"{what} must not be empty or begin or end with a space, not {name!r:.40}")
    if len(_CHECKED_QUEUES) < CHECKED_NAMES_MAX:
        _CHECKED_QUEUES.add(name)
    return name


def check_queue_names(queues: Iterable[str], what: str = "queues") -> list[str]:
    """A list of queue names, each checked (``check_queue_name``: InvalidPayload); ValueError for
    what is no list of them."""
    return [check_queue_name(name, "a queue name") for name in _item_list(queues, what, "queue names")]


def check_progress(fraction: float | None, message: str | None) -> tuple[float | None, str | None]:
    """A progress report as stored: ``fraction`` clamped to [0, 1] (InvalidPayload for what is no
    number), ``message`` cut to ``PROGRESS_MESSAGE_MAX_CHARS``. ``ctx.progress`` checks before
    it throttles, so a bad report fails at once, not only when a write is due. ``ctx.progress``
    calls this only for a report other than the usual one (a float in [0, 1], short ASCII text),
    which it tests itself (issue 17's overhead); for the usual one this returns it unchanged."""
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or fraction != fraction:  # NaN
            raise InvalidPayload("progress fraction must be a number between 0 and 1")
        fraction = 1.0 if fraction > 1 else 0.0 if fraction < 0 else float(fraction)  # 10**400: no float
    if message is not None:
        message = clip(str(message), PROGRESS_MESSAGE_MAX_CHARS)
    return fraction, message


def check_key_options(keys: Sequence[str | None] | None, key_scope: str, key_ttl: float | None) -> None:
    """``enqueue_many``'s key options without keys: refused, as ``enqueue`` refuses them without a
    key (they were dropped without a word)."""
    if keys is None and (key_scope != "all" or key_ttl is not None):
        raise InvalidPayload("key_scope and key_ttl apply to keys: give keys=[...]")


def _split_ids(job_ids: Iterable[int], what: str = "job ids") -> tuple[list[int], list[int]]:
    """``job_ids`` split into those a job can have and those none can (above 2**63-1: the driver
    raised OverflowError on them); ValueError for what is no list of whole numbers (bytes iterate
    as ints: ``cancel_many(ids=b"\x03")`` cancelled job 3)."""
    if isinstance(job_ids, str | bytes) or not isinstance(job_ids, Iterable):
        raise ValueError(f"{what} must be a list of job ids, not {job_ids!r:.40}")
    possible: list[int] = []
    beyond: list[int] = []
    for job_id in job_ids:
        (beyond if job_id_or_none(job_id) is None else possible).append(job_id)
    return possible, beyond


def _text_arg(value: object, what: str) -> str:
    """A name given to a read or an action, or ValueError (``pause_schedule([1])`` raised
    TypeError from the driver)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {value!r:.40}")
    return value


def _count_up_to(up_to: int | None) -> int | None:
    return None if up_to is None else check_rows(up_to, name="up_to")


def check_rows(limit: int, least: int = 1, name: str = "limit", most: int = INT32_MAX) -> int:
    """A call's ``limit`` of rows (or another count, ``name``), checked: a whole number from
    ``least`` to ``INT32_MAX`` (ValueError). SQLite reads ``LIMIT -1`` as no limit:
    ``claim_many(w, -1)`` claimed every due job in one transaction, and ``latest(limit=-1)`` read
    the whole table."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not least <= limit <= most:
        raise ValueError(f"{name} must be a whole number from {least} to {most:,}, not {limit!r:.40}")
    return limit


def check_page(page: Page) -> Page:
    """A listing's ``limit`` (0 or more), ``offset`` (0 or more) and ``window`` (None, or 1 or
    more), checked: whole numbers up to ``INT32_MAX`` (ValueError). SQLite reads a negative limit as
    none (``Page(limit=-1)`` read the whole table) and a negative offset as 0; PostgreSQL refused
    them with a driver error."""
    check_rows(page.limit, least=0)
    check_rows(page.offset, least=0, name="offset")
    if page.window is not None:
        check_rows(page.window, name="window")
    return page


def status_of(value: object) -> JobStatus:
    """A job status, given as itself or by name (any case); ValueError for anything else."""
    if isinstance(value, JobStatus):
        return value
    try:
        return JobStatus(str(value).upper())
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise ValueError(f"a job status is one of {names}, not {value!r:.40}") from None


def check_filter(where: JobFilter | None) -> JobFilter:
    """``where`` (None: every job) checked, ValueError in one line; a status may be given as its
    name (``"PENDING"``, any case). ``JobFilter(statuses=("PENDING",))`` failed deep in the
    store with AttributeError, ``search=5`` too; ``error=b"x"`` with TypeError."""
    if where is None:
        return JobFilter()
    if not isinstance(where, JobFilter):
        raise ValueError(f"where must be a JobFilter, not {type(where).__name__}")
    for name in ("statuses", "queues", "tasks", "ids"):
        # A string is no tuple of names: queues="mail" matched queues "m", "a", "i", "l", and
        # ids="" (empty) matched every job, so cancel_many(where=JobFilter(ids="")) cancelled all.
        if isinstance(getattr(where, name), str | bytes) or not isinstance(getattr(where, name), tuple | list):
            raise ValueError(f"{name} must be a tuple, not {getattr(where, name)!r:.40}")
    statuses = tuple(status_of(s) for s in where.statuses)
    for name in ("queues", "tasks"):
        if not all(isinstance(v, str) for v in getattr(where, name)):
            raise ValueError(f"{name} must be names (text), not {getattr(where, name)!r:.60}")
    for name in ("search", "error"):
        value = getattr(where, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be text, not {value!r:.40}")
        if value is not None and "\x00" in value:  # SQLite's LIKE ends the pattern there: all matched
            raise ValueError(f"{name} must not hold a NUL character")
    for name in ("created_after", "created_before", "finished_after", "finished_before"):
        bound = getattr(where, name)
        if bound is not None and seconds_or(bound, -1.0) != bound:  # NaN, infinity, a bool, text
            raise ValueError(f"{name} must be a UNIX time in seconds, not {bound!r:.40}")
    for job_id in where.ids:
        job_id_or_none(job_id)  # ValueError for no whole number
    # (Not `==`: a StrEnum equals its name, so ("PENDING",) == (JobStatus.PENDING,).)
    named = any(type(s) is not JobStatus for s in where.statuses)
    return dataclasses.replace(where, statuses=statuses) if named else where


def check_wait_timeout(timeout: float | None) -> None:
    """``wait``'s ``timeout``: None or infinity (no limit), or seconds from 0 (ValueError). A NaN
    timeout waited forever: its deadline was never reached."""
    if timeout is not None and timeout != math.inf and seconds_or(timeout, -1.0) < 0:
        raise ValueError(f"timeout must be a number of seconds, not negative, not {timeout!r}")


def _moment_or_none(value: float | None, name: str) -> float | None:
    """None, or a time as a finite number of seconds (ValueError)."""
    if value is None:
        return None
    moment = seconds_or(value, math.nan)
    if math.isnan(moment):
        raise ValueError(f"{name} must be a time in seconds, not {value!r:.40}")
    return moment


def _check_span(window: float, bucket: float) -> None:
    """A history's ``window`` and ``bucket``, checked (ValueError): NaN and infinity failed deep in
    the store with ValueError or OverflowError, a bucket of 0 with ZeroDivisionError."""
    seconds = seconds_or(window, -1.0)
    if not 0 < seconds <= DURATION_MAX_SECONDS:
        raise ValueError(f"window must be a number of seconds above 0 and at most 100 years, not {window!r}")
    width = seconds_or(bucket, -1.0)  # at most 100 years too: 2**63 raised OverflowError in the driver
    if not 0 < width <= DURATION_MAX_SECONDS or seconds / width > HISTORY_BUCKETS_MAX:
        raise ValueError(f"bucket must be a number of seconds up to 100 years that cuts the window into at most "
                         f"{HISTORY_BUCKETS_MAX:,} buckets, not {bucket!r}")  # fmt: skip


def _key_scope(key: str | None, scope: str, ttl: float | None, now: float) -> tuple[str, float | None]:
    """The stored scope of a key and when it expires (``ttl`` scopes only); one-line errors."""
    if scope not in KEY_SCOPES:
        raise InvalidPayload(f"key_scope must be one of {', '.join(KEY_SCOPES)}, not {scope!r}")
    if ttl is None:
        if key is None and scope != "all":
            raise InvalidPayload("key_scope needs a key")
        return scope, None
    if key is None:
        raise InvalidPayload("key_ttl needs a key")
    if scope != "all":
        raise InvalidPayload("key_ttl and key_scope='active' cannot be combined; choose one")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= DURATION_MAX_SECONDS:
        raise InvalidPayload("key_ttl must be a positive number of seconds, at most 100 years")
    return "ttl", now + ttl


class _Keep:
    """The type of ``KEEP``: a limit ``set_limits`` leaves as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


def actor_of(actor: str | None, settings: Settings) -> str:
    """Who an operator action is recorded as: ``actor``, checked as a name (InvalidPayload: an
    actor holding a newline and an escape sequence was stored, and echoed raw by the CLI), or
    ``default_actor``."""
    return default_actor(settings) if actor is None or actor == "" else _check_name(actor, "actor", remember=False)


def default_actor(settings: Settings) -> str:
    """The operator recorded on actions: settings, then ``JOBQ_OPERATOR``, then the login name."""
    if settings.operator:
        return _check_name(settings.operator, "operator (JOBQ_OPERATOR)", remember=False)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def enqueue_outcome_unknown(exc: OutcomeUnknown) -> OutcomeUnknown:
    """``exc``, raised by an enqueue, with what its caller can do about it."""
    return OutcomeUnknown(
        f"{exc}. The jobs may be stored: look for them (jobq list) before enqueueing them again. Jobs "
        "with an idempotency key (key=...) are found again by it, which makes sending them again safe"
    )


def backup(
    dest: str | os.PathLike[str], url: str | None = None, *, settings: Settings | None = None, compact: bool = False
) -> QueueCopy:
    """``Queue.backup`` of the existing SQLite queue at ``url`` (default: the settings'
    database), opened for the copy and closed after it. A PostgreSQL URL is refused before any
    connection is made (StorageError: back a server up with ``pg_dump``)."""
    settings = _settings_for(url, settings)
    check_copyable(settings.database_url)
    with Queue(settings=settings, create=False) as q:
        return q.backup(dest, compact=compact)


def restore(source: str | os.PathLike[str], url: str | None = None, *, settings: Settings | None = None) -> QueueCopy:
    """Put the backup ``source`` (made by ``Queue.backup``) in place of the SQLite queue at
    ``url`` (default: the settings' database). No process may have the queue open: StorageError
    names one that has. The replaced file is kept beside it (``QueueCopy.replaced``), and new jobs
    get ids above every id the replaced queue handed out (``QueueCopy.ids_above``)."""
    settings = _settings_for(url, settings)
    return restore_store(settings.database_url, _file_argument(source, "the backup"), time.time())


def _settings_for(url: str | None, settings: Settings | None) -> Settings:
    """``settings`` (or those loaded from the environment) with ``url`` as the database, if given."""
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise ConfigError(f"a database URL is text such as sqlite:///data/queue.db, not {url!r:.40}")
    given = {"database_url": url}
    return load_settings(given) if settings is None else settings.replace(**given)


def _file_argument(path: object, what: str) -> str:
    """A file name given to the API, as text: ValueError for anything else."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ValueError(f"{what} is a file name, not {path!r:.40}")
    return path


def lease_of(job: Job) -> Lease:
    """The lease a claimed job carries (what fences its heartbeat, complete and fail)."""
    if not isinstance(job, Job):
        raise ValueError(f"a Job handed out by claim() is needed, not {job!r:.40}")
    if job.lease_token is None or job.lease_owner is None:
        raise LeaseLost(job.id, "use", "this Job was not handed out by claim()")
    return build_lease(job.id, job.lease_token, job.lease_owner)


def leases_of(jobs: Iterable[Job], call: str) -> list[Lease]:
    """The leases of a worker call's jobs, or ValueError for what is no list of Jobs
    (``release_many(job)`` raised TypeError from deep inside)."""
    return [lease_of(j) for j in _item_list(jobs, call, "Jobs")]


def _item_list(items: Iterable[Any], call: str, what: str, error: type[Exception] = ValueError) -> list[Any]:
    """``items`` as a list, or ``error``: a string, a mapping or a single Job is one value, not a
    list of them."""
    if isinstance(items, str | bytes | Mapping | Job) or not isinstance(items, Iterable):
        raise error(f"{call} takes a list of {what}, not {type(items).__name__}")
    return list(items)


READ_MARK = "__jobq_read__"
"""The attribute ``@read`` sets on a method."""
_Method = TypeVar("_Method", bound=Callable[..., Any])


def read(method: _Method) -> _Method:
    """Marks a ``Queue`` method as a read: it changes nothing stored, so a caller may show its
    last answer again while the database cannot be read (the apps' stale figures:
    ``jobq.web.health.READS`` is ``read_methods()``). A method that writes, waits for a change
    (``wait``) or hands out work must not carry it."""
    setattr(method, READ_MARK, True)
    return method


class Queue:
    """A handle on one job store. Thread-safe; open one per process (never share across fork)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] | None = None,
        backend: Backend | None = None,
        create: bool = True,
    ) -> None:
        """Open the queue at ``url`` (default: settings, i.e. ``JOBQ_DATABASE_URL`` or data/queue.db).

        ``create=False`` refuses to create a missing SQLite database (for read-only viewers).
        ``clock`` (UNIX seconds) stamps every job time and lease; by default this host's clock,
        corrected to the database server's where they differ by ``CLOCK_SKEW_CORRECTED_SECONDS``
        or more (``clock_offset``): leases written on one host are judged by another's.
        Raises ConfigError for a bad URL and StorageError when the database cannot be used.
        """
        # Settings built in code are checked like loaded ones (replace() does): a lease_seconds
        # of NaN or infinity made leases that were never rescued. Loaded ones are checked once.
        if url is not None and (not isinstance(url, str) or not url.strip()):
            # Queue("") opened the default database; Queue(5) failed with TypeError.
            raise ConfigError(f"a database URL is text such as sqlite:///data/queue.db, not {url!r:.40}")
        given = {"database_url": url}
        settings = load_settings(given) if settings is None else settings.replace(**given)
        self.settings = settings
        self.clock_offset = 0.0
        """Seconds the default clock adds to this host's: the store's clock less this host's, as
        last measured (at open, then by ``sync_clock``), when that is ``CLOCK_SKEW_CORRECTED_SECONDS``
        or more; else 0.0. Always 0.0 with a ``clock`` of the caller's, and on SQLite."""
        self.clock_skew: float | None = None
        """How far this host's clock was from the store's at the last measurement that could be
        used, in seconds (positive: ahead), whether or not it was corrected; None when nothing
        is measured (SQLite, a ``clock`` of the caller's). Workers keep it in the registry
        (``WorkerInfo.clock_skew``), so the host whose clock is off shows there."""
        self.backend: Backend = backend or open_backend(settings.database_url, create=create)
        self.default_clock = clock is None
        """True when this handle's clock is jobq's own: this host's wall clock (corrected to the
        store's on PostgreSQL), whose steps are the host's and which workers watch for
        (``jobq.worker.stall``). A ``clock`` of the caller's (``jobq.testing.FakeClock``) is used
        as it is: moved by hand, it is not a host that slept."""
        self._watching_clock = self.default_clock and not self.single_host
        """True when this handle keeps its default clock on the store's (see ``_check_clock``)."""
        self._clock_checked_at = time.monotonic()
        self._clock_step = time.time() - time.monotonic()  # moves only when the wall clock steps
        # A store on this host: its clock is time.time itself (no offset ever, no Python call).
        self.clock = clock if clock is not None else self.wall_time if self._watching_clock else time.time
        reading = self.backend.clock_reading
        if self._watching_clock and reading is not None:
            self._correct_clock(*reading)

    @property
    def url(self) -> str:
        """The database URL, password included: never show or log it (see ``display_url``)."""
        return self.settings.database_url

    @property
    def display_url(self) -> str:
        """The database URL with its password masked: what apps, the CLI and logs show."""
        return redact_url(self.settings.database_url)

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    # -- producers -------------------------------------------------------------------------
    def _payload_text(self, payload: Any, what: str = "payload") -> str:
        """``payload`` as JSON, checked for depth and size (InvalidPayload, PayloadTooLarge)."""
        limit = self.settings.payload_limit_bytes
        estimate = walk(payload, limit, what)  # refuses too deep a payload too, without recursion
        if estimate > limit:
            raise PayloadTooLarge(estimate, limit, at_least=True, what=what)
        text = encode_walked(payload, what)  # walked in full above: its depth is checked
        size = len(text) if text.isascii() else len(text.encode())
        if size > limit:
            raise PayloadTooLarge(size, limit, what=what)
        return text

    def result_text(self, result: Any) -> str | None:
        """A job's result as stored: None for None, else JSON held to ``payload_limit_bytes`` as a
        payload is (InvalidPayload, PayloadTooLarge). Results had no limit: a handler's 10 MB
        result was stored in the job's row, and read back by every listing of it."""
        return None if result is None else self._payload_text(result, "result")

    def _new_job(
        self,
        payload: Any,
        *,
        queue: str | None,
        task: str,
        priority: int,
        delay: float | None,
        run_at: float | None,
        key: str | None,
        max_attempts: int | None,
        timeout: float | None,
        now: float,
        key_scope: str = "all",
        key_ttl: float | None = None,
        on_conflict: str = "return",
        concurrency_key: str | None = None,
        policy: JobPolicy | None = None,
    ) -> NewJob:
        text = self._payload_text(payload)
        task = _check_name(task, "task name")  # before POLICIES.get: task=[] raised TypeError there
        # An empty key is refused, not taken as a key: a script passing --key "$UNSET" made every
        # such job after the first a duplicate of it (silently dropped).
        if key is not None and not _check_name(key, "idempotency key", remember=False):
            raise InvalidPayload("an idempotency key must not be empty (leave it out for none)")
        if concurrency_key is not None and not _check_name(concurrency_key, "concurrency key", remember=False):
            raise InvalidPayload("a concurrency key must not be empty (leave it out for none)")
        if key is None and key_scope == "all" and key_ttl is None:  # the usual enqueue: nothing to check
            scope, key_expires_at = "all", None
        else:
            scope, key_expires_at = _key_scope(key, key_scope, key_ttl, now)
        if on_conflict not in ON_CONFLICT_CHOICES:
            raise InvalidPayload(f"on_conflict must be one of {', '.join(ON_CONFLICT_CHOICES)}, not {on_conflict!r}")
        # The task's defaults, when it is registered in this process: what the job shows until a
        # worker runs it (the worker applies its own registration, see jobq.retry).
        task_policy = POLICIES.get(task)
        if task_policy is not None:
            max_attempts = task_policy.max_attempts if max_attempts is None else max_attempts
            timeout = task_policy.timeout if timeout is None else timeout
        attempts = self.settings.max_attempts if max_attempts is None else max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:  # True was 1
            raise InvalidPayload("max_attempts must be an integer >= 1")
        if attempts > INT32_MAX:
            raise InvalidPayload(f"max_attempts must be at most {INT32_MAX}")
        if isinstance(priority, bool) or not isinstance(priority, int):  # True was priority 1
            raise InvalidPayload("priority must be an integer (lower runs first)")
        if not INT32_MIN <= priority <= INT32_MAX:
            raise InvalidPayload(f"priority must be between {INT32_MIN} and {INT32_MAX}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            raise InvalidPayload("timeout must be a number of seconds")
        if timeout is not None and not 0 < timeout <= DURATION_MAX_SECONDS:
            raise InvalidPayload("timeout must be positive (seconds) and at most 100 years")
        when = now if run_at is None and delay is None else _when(now, delay, run_at)
        # NewJob's fields by position, in their order (``common.frozen_builder``: ~0.45 us against
        # ~1.15 through the dataclass's ``__init__`` and its keywords, per enqueued job).
        return build_new_job(
            text,  # payload_json
            self._queue_name(queue),
            task,
            priority,
            when,  # run_at
            attempts,  # max_attempts
            timeout,
            key,  # idempotency_key
            scope,  # key_scope
            key_expires_at,
            on_conflict,
            concurrency_key,
            None if policy is None else policy.to_json(),  # policy_json
        )

    def _policy(
        self, max_attempts: int | None, timeout: float | None, backoff: object, retry_on: object
    ) -> JobPolicy | None:
        """What an enqueue set explicitly (checked once per call), stored so that a worker
        applies the task's defaults only to the fields left unset."""
        if max_attempts is None and timeout is None and backoff is None and retry_on is None:
            return None
        return JobPolicy(
            max_attempts=max_attempts,
            timeout=timeout,  # checked with the row's columns (_new_job)
            backoff=None if backoff is None else backoff_spec(backoff),
            retry_on=None if retry_on is None else retry_on_names(retry_on),
        )

    def enqueue(
        self,
        payload: Any,
        *,
        queue: str | None = None,
        task: str = "",
        priority: int = 0,
        delay: float | None = None,
        run_at: float | None = None,
        key: str | None = None,
        key_scope: str = "all",
        key_ttl: float | None = None,
        on_conflict: str = "return",
        max_attempts: int | None = None,
        timeout: float | None = None,
        concurrency_key: str | None = None,
        backoff: BackoffSpec | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        conn: Any = None,
    ) -> int:
        """Submit one job and return its id.

        Args:
            payload: any JSON-serialisable value (at most ``payload_limit_bytes`` encoded).
            queue: queue name (default from settings, ``"default"``).
            task: which handler runs it (workers route on it; "" means the worker's default).
            priority: lower runs first (default 0).
            delay / run_at: run no sooner than ``now + delay`` seconds, or at UNIX time ``run_at``.
            key: idempotency key: submitting a key that a job holds returns that job's id
                (or raises, see ``on_conflict``) and stores nothing.
            key_scope: how long a job holds its key: ``"all"`` (default: until the job is
                purged) or ``"active"`` (while it is PENDING or PROCESSING: once it finishes,
                the same key makes a new job). See docs/uniqueness.md.
            key_ttl: hold the key this many seconds after enqueue instead (whatever the job's
                status; with ``key_scope="all"`` only).
            on_conflict: ``"return"`` (default) the holder's id, or ``"raise"`` DuplicateJob.
            max_attempts: attempts before FAILED (default: the task's, then the settings').
            timeout: seconds a run may take before it counts as failed (default: the task's).
            backoff: seconds before each retry (default: the task's, then the queue's
                exponential backoff): ``10``, per attempt ``[1, 10, 60]`` (the last repeats), or
                ``{"base": 2, "cap": 600}`` (exponential with jitter).
            retry_on: the exceptions that are retried; any other fails the job at once
                (default: the task's, then every exception). Classes or their qualified names
                (``"mymod.Flaky"``; a bare name is a built-in): stored as names and matched
                against the raised exception's classes, so nothing is imported or unpickled.
                A field set here wins over the task's default (see docs/retries.md).
            concurrency_key: jobs of one key share the queue's per-key concurrency limit
                (``set_limits(queue, per_key=N)``: at most N of them run at once; see
                docs/flow-control.md). Without a per-key limit it has no effect.
            conn: the application's open connection to the same store (a ``psycopg.Connection``
                on PostgreSQL; an ``apsw.Connection`` on the same SQLite file, not the stdlib
                ``sqlite3``: see docs/transactions.md): the job is written in its current
                transaction, which jobq never commits or rolls back. It exists, and workers are
                woken, only if the caller commits.

        Raises InvalidPayload / PayloadTooLarge, DuplicateJob, StorageError; ConfigError for a
        ``conn`` of the wrong kind or on another database.

        >>> with psycopg.connect(url) as conn:                       # doctest: +SKIP
        ...     conn.execute("INSERT INTO users (email) VALUES (%s)", ["ann@example.com"])
        ...     q.enqueue({"to": "ann@example.com"}, queue="mail", conn=conn)
        """
        if self._watching_clock:
            self._check_clock()
        now = self.clock()
        job = self._new_job(
            payload,
            queue=queue,
            task=task,
            priority=priority,
            delay=delay,
            run_at=run_at,
            key=key,
            max_attempts=max_attempts,
            timeout=timeout,
            now=now,
            key_scope=key_scope,
            key_ttl=key_ttl,
            on_conflict=on_conflict,
            concurrency_key=concurrency_key,
            policy=self._policy(max_attempts, timeout, backoff, retry_on),
        )
        try:
            if tracing.recording():
                return self._traced_enqueue([job], now, conn)[0]
            if conn is not None:
                return self.backend.enqueue_in(conn, [job], now)[0]
            return self.backend.enqueue([job], now)[0]
        except OutcomeUnknown as exc:
            raise enqueue_outcome_unknown(exc) from None

    def _traced_enqueue(self, jobs: list[NewJob], now: float, conn: Any = None) -> list[int]:
        """The enqueue in a span whose context each job stores (``jobq.observability.tracing``);
        with ``conn``, in the application's transaction: the context commits with the jobs."""
        with tracing.enqueue_span(jobs[0].queue, jobs[0].task, len(jobs)) as (span, traces):
            if conn is not None:
                ids = self.backend.enqueue_in(conn, jobs, now, traces)
            else:
                ids = self.backend.enqueue(jobs, now, traces) if traces else self.backend.enqueue(jobs, now)
            tracing.set_job_ids(span, ids)
            return ids

    def enqueue_many(
        self,
        payloads: Iterable[Any],
        *,
        queue: str | None = None,
        task: str = "",
        priority: int = 0,
        delay: float | None = None,
        keys: Sequence[str | None] | None = None,
        key_scope: str = "all",
        key_ttl: float | None = None,
        on_conflict: str = "return",
        max_attempts: int | None = None,
        timeout: float | None = None,
        concurrency_key: str | None = None,
        concurrency_keys: Sequence[str | None] | None = None,
        backoff: BackoffSpec | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        conn: Any = None,
    ) -> list[int]:
        """Submit many jobs in one transaction (all or none); ids in order. ``conn``: in the
        application's transaction; ``key_scope``, ``key_ttl``, ``on_conflict``: for every key,
        and the retry policy (``max_attempts``, ``timeout``, ``backoff``, ``retry_on``) for every
        job, as for ``enqueue`` (``"raise"`` stores none of the jobs). ``concurrency_key``: one for
        every job, or ``concurrency_keys``: one per payload (see ``enqueue``)."""
        if self._watching_clock:
            self._check_clock()
        now = self.clock()
        policy = self._policy(max_attempts, timeout, backoff, retry_on)
        items = payload_list(payloads)
        keys = None if keys is None else payload_list(keys, "keys")
        concurrency_keys = None if concurrency_keys is None else payload_list(concurrency_keys, "concurrency keys")
        if keys is not None and len(keys) != len(items):
            raise InvalidPayload(f"{len(keys)} keys for {len(items)} payloads")
        if concurrency_keys is not None and len(concurrency_keys) != len(items):
            raise InvalidPayload(f"{len(concurrency_keys)} concurrency keys for {len(items)} payloads")
        if concurrency_keys is not None and concurrency_key is not None:
            raise InvalidPayload("give concurrency_key or concurrency_keys, not both")
        check_key_options(keys, key_scope, key_ttl)
        if keys is None and concurrency_keys is None:
            # Every job but its payload is the same: checked once (for the first job), then per
            # job only the payload (the per-job checks were 2/3 of a batch's Python time).
            # No payloads: the options are checked all the same (a bad priority passed unseen).
            first = self._new_job(
                items[0] if items else None,
                queue=queue,
                task=task,
                priority=priority,
                delay=delay,
                run_at=None,
                key=None,
                max_attempts=max_attempts,
                timeout=timeout,
                now=now,
                on_conflict=on_conflict,
                concurrency_key=concurrency_key,
                policy=policy,
            )
            same = dataclasses.asdict(first)
            del same["payload_json"]
            text = self._payload_text
            jobs = [first, *(NewJob(payload_json=text(p), **same) for p in items[1:])] if items else []
        else:
            jobs = self._batch_jobs(
                items, queue, task, priority, delay, keys, key_scope, key_ttl, on_conflict, max_attempts,
                timeout, now, concurrency_key, concurrency_keys, policy,
            )  # fmt: skip
        if not jobs:
            return []
        try:
            if tracing.recording():
                return self._traced_enqueue(jobs, now, conn)
            if conn is not None:
                return self.backend.enqueue_in(conn, jobs, now)
            return self.backend.enqueue(jobs, now)
        except OutcomeUnknown as exc:
            raise enqueue_outcome_unknown(exc) from None

    def _batch_jobs(
        self,
        items: Sequence[Any],
        queue: str | None,
        task: str,
        priority: int,
        delay: float | None,
        keys: Sequence[str | None] | None,
        key_scope: str,
        key_ttl: float | None,
        on_conflict: str,
        max_attempts: int | None,
        timeout: float | None,
        now: float,
        concurrency_key: str | None,
        concurrency_keys: Sequence[str | None] | None,
        policy: JobPolicy | None,
    ) -> list[NewJob]:
        """One checked NewJob per payload, each with its own key or concurrency key."""
        return [
            self._new_job(
                p,
                queue=queue,
                task=task,
                priority=priority,
                delay=delay,
                run_at=None,
                key=keys[i] if keys else None,
                max_attempts=max_attempts,
                timeout=timeout,
                now=now,
                key_scope=key_scope if keys and keys[i] is not None else "all",
                key_ttl=key_ttl if keys and keys[i] is not None else None,
                on_conflict=on_conflict,
                concurrency_key=concurrency_keys[i] if concurrency_keys is not None else concurrency_key,
                policy=policy,
            )
            for i, p in enumerate(items)
        ]

    # -- workers ---------------------------------------------------------------------------
    def claim(
        self, worker_id: str, *, lease: float | None = None, queue: str | Sequence[str] | None = None
    ) -> Job | None:
        """Take the next due job (lowest priority number, then run_at, then id) or None."""
        # claim_many(worker_id, 1, ...) inlined: the per-job API's one call fewer.
        if self._watching_clock:
            self._check_clock()
        worker_id = check_worker_id(worker_id)
        jobs = self.backend.claim(worker_id, self._queues(queue), 1, self._lease(lease), self.clock)
        return jobs[0] if jobs else None

    def claim_many(
        self, worker_id: str, limit: int, *, lease: float | None = None, queue: str | Sequence[str] | None = None
    ) -> list[Job]:
        """Take up to ``limit`` due jobs in one transaction, each with its own lease token."""
        if self._watching_clock:
            self._check_clock()
        worker_id = check_worker_id(worker_id)
        return self.backend.claim(worker_id, self._queues(queue), check_rows(limit, 0), self._lease(lease), self.clock)

    def _queue_name(self, queue: str | None) -> str:
        """A new job's or schedule's queue, checked: ``queue``, or the settings' for None or ""
        (any other value that is no name is refused: ``queue=0`` was the default queue)."""
        return check_queue_name(self.settings.queue if queue is None or queue == "" else queue)

    def _lease(self, lease: float | None) -> float:
        """The lease a call asks for in seconds (``None``: the settings'), checked (ValueError)."""
        return self.settings.lease_seconds if lease is None else check_lease(lease)

    def _queues(self, queue: str | Sequence[str] | None) -> list[str]:
        if isinstance(queue, str):
            return [queue or self.settings.queue]  # "": the settings' queue, as for a new job
        if queue is not None and not (isinstance(queue, tuple | list) and all(isinstance(q, str) for q in queue)):
            raise ValueError(f"queue must be a name or a list of names, not {queue!r:.40}")
        return list(queue or [self.settings.queue])

    def heartbeat(self, job: Job, *, lease: float | None = None) -> bool:
        """Extend the job's lease. Returns True when an operator asked to cancel it.

        Raises LeaseLost when the job is no longer this lease's (the refusal is recorded).
        """
        result = self.heartbeat_many([job], lease=lease)[0]
        if not result.alive:
            raise LeaseLost(job.id, "heartbeat")
        return result.cancel_requested

    def heartbeat_many(self, jobs: Sequence[Job], *, lease: float | None = None) -> list[HeartbeatResult]:
        if self._watching_clock:
            self._check_clock()
        leases = leases_of(jobs, "heartbeat_many")
        return self.backend.heartbeat(leases, self._lease(lease), self.clock) if leases else []

    def complete(self, job: Job, result: Any = None, *, conn: Any = None) -> None:
        """Mark the job COMPLETED (with an optional JSON result). Raises LeaseLost when stale.

        ``conn``: in the application's open transaction on that connection (see ``enqueue``),
        fenced by the lease like every worker write: LeaseLost is raised before the caller
        commits, so its own writes roll back with the refused completion."""
        completion = build_completion(lease_of(job), None if result is None else self.result_text(result), None)
        if conn is None:
            # complete_many's work for one job, without its list of pairs and notes.
            if not self.backend.complete([completion], self.clock, repeat=False)[0]:
                raise LeaseLost(job.id, "complete")
            return
        if not self.backend.complete_in(conn, [completion], self.clock)[0]:
            raise LeaseLost(job.id, "complete", "roll your transaction back")

    def complete_many(
        self, items: Sequence[tuple[Job, Any]], *, notes: Sequence[str | None] | None = None, repeat: bool = False
    ) -> list[bool]:
        """Group-commit completions: one transaction, each still fenced by its own token.

        ``notes``, one per item, are recorded in the completion events. ``repeat``: these
        completions were sent before and failed with an error, so they may have committed; one
        that had is reported True and not recorded as refused (without ``repeat``, completing
        twice with one lease is refused like any stale write).
        """
        completions = self._completions(items, notes, "complete_many")
        return self.backend.complete(completions, self.clock, repeat=repeat) if completions else []

    def _completions(
        self, items: Iterable[tuple[Job, Any]], notes: Sequence[str | None] | None, call: str
    ) -> list[Completion]:
        """A group completion's items, checked (ValueError: a list of (job, result) pairs, and
        notes, when given, one text or None per item; they raised TypeError from inside)."""
        pairs = _item_list(items, call, "(job, result) pairs")
        if notes is None:
            notes = [None] * len(pairs)
        else:
            notes = _item_list(notes, call, "notes")
            if len(notes) != len(pairs) or not all(n is None or isinstance(n, str) for n in notes):
                raise ValueError(f"{call}: notes must be one text or None per item ({len(pairs)})")
        out = []
        for item, note in zip(pairs, notes, strict=True):
            try:  # unpacked here, not in a helper: a call per job of a worker's batch (issue 13)
                job, result = item
            except (TypeError, ValueError):
                raise ValueError(f"{call} takes a list of (job, result) pairs, not one holding {item!r:.40}") from None
            out.append(build_completion(lease_of(job), None if result is None else self.result_text(result), note))
        return out

    def complete_many_and_claim(
        self,
        items: Sequence[tuple[Job, Any]],
        worker_id: str,
        limit: int,
        *,
        notes: Sequence[str | None] | None = None,
        repeat: bool = False,
        lease: float | None = None,
        queue: str | Sequence[str] | None = None,
    ) -> tuple[list[bool], list[Job]]:
        """``complete_many(items)`` and ``claim_many(worker_id, limit)`` in one transaction: one
        commit instead of two. Returns what each would have returned."""
        if self._watching_clock:
            self._check_clock()
        completions = self._completions(items, notes, "complete_many_and_claim")
        return self.backend.complete_and_claim(
            completions,
            self.clock,
            worker_id,
            self._queues(queue),
            check_rows(limit, 0),
            self._lease(lease),
            repeat=repeat,
        )

    def fail(self, job: Job, error: str, *, retry: bool = True) -> JobStatus:
        """Record a failed attempt: back to PENDING after backoff while attempts are left (and
        ``retry``), else FAILED; CANCELLED instead of a retry when an operator asked to cancel the
        job. Returns the new status. Raises LeaseLost when stale."""
        status, ok = self.fail_many([(job, error, retry)])[0]
        if not ok:
            raise LeaseLost(job.id, "fail")
        return status

    def fail_many(
        self,
        items: Sequence[tuple[Job, str, bool]],
        *,
        repeat: bool = False,
        delays: Sequence[float | None] | None = None,
    ) -> list[tuple[JobStatus, bool]]:
        """Record failed attempts in one transaction (see ``fail``; ``repeat`` as in
        ``complete_many``). ``delays``: seconds before each retry (None: the queue's backoff)."""
        failures = self._failures(items, delays)
        done = self.backend.fail(failures, self.clock, repeat=repeat) if failures else []
        # A refused write reports the status it would have left.
        return [
            (status or (JobStatus.PENDING if f.retry_at is not None else JobStatus.FAILED), status is not None)
            for f, status in zip(failures, done, strict=True)
        ]

    def release(self, job: Job, reason: str = "worker shutting down", *, repeat: bool = False) -> bool:
        """Give the job back at once (PENDING, attempt not counted). False when already lost."""
        return self.backend.release([lease_of(job)], self.clock, reason, repeat=repeat)[0]

    def _failures(self, items: Iterable[tuple[Job, str, bool]], delays: Sequence[float | None] | None) -> list[Failure]:
        """Failed attempts as the store records them: each retried after ``delays[i]`` (None:
        the queue's backoff) while attempts are left and ``retry``, else final. ValueError for
        items that are no (job, error, retry) triples or delays that are not one per item."""
        triples = _item_list(items, "fail_many", "(job, error, retry) triples")
        if delays is not None:
            delays = _item_list(delays, "fail_many", "delays")
            if len(delays) != len(triples):
                raise ValueError(f"fail_many: delays must be one per item ({len(triples)}), not {len(delays)}")
        now = self.clock()
        failures: list[Failure] = []
        for i, item in enumerate(triples):
            try:  # as _completions unpacks its pairs
                job, error, retry = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"fail_many takes a list of (job, error, retry) triples, not one holding {item!r:.40}"
                ) from None
            lease = lease_of(job)
            again = retry and job.attempts < job.max_attempts
            delay = delays[i] if delays is not None else None
            if delay is not None and not 0 <= seconds_or(delay, -1.0) <= DURATION_MAX_SECONDS:
                raise ValueError(f"a retry delay must be a number of seconds from 0 to 100 years, not {delay!r}")
            retry_at = now + (self.backoff(job.attempts) if delay is None else delay) if again else None
            failures.append(Failure(lease, clip(str(error), ERROR_MAX_CHARS), retry_at))
        return failures

    def release_many(
        self, jobs: Sequence[Job], reason: str = "worker shutting down", *, repeat: bool = False
    ) -> list[bool]:
        """Give jobs back in one transaction (see ``release``); one bool per job, in order."""
        leases = leases_of(jobs, "release_many")
        return self.backend.release(leases, self.clock, reason, repeat=repeat) if leases else []

    def ack_cancel(self, job: Job, *, repeat: bool = False) -> bool:
        """The worker stopped a job whose cancellation was requested: PROCESSING -> CANCELLED."""
        return self.backend.ack_cancel([lease_of(job)], self.clock, repeat=repeat)[0]

    def backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, base=self.settings.backoff_base_seconds, cap=self.settings.backoff_cap_seconds)

    def rescue_expired(
        self,
        actor: str = "rescuer",
        gone_owners: Sequence[str] = (),
        *,
        cutoff: Callable[[float], float] | None = None,
    ) -> list[RescueResult]:
        """Return jobs whose lease expired (or whose owner is in ``gone_owners``, workers known to
        have exited) to PENDING, or FAILED when out of attempts, or CANCELLED if cancel was asked.

        ``cutoff`` maps the time read under the lock to the expiry before which a lease counts as
        lost (the worker's rescuer uses it to discount a stall every writer saw)."""
        if self._watching_clock:
            self._check_clock()
        return self.backend.rescue_expired(self.clock, self.backoff, actor, gone_owners, cutoff, max_attempts_for)

    @read
    def next_due_at(self, queue: str | Sequence[str] | None = None) -> float | None:
        """The earliest ``run_at`` among PENDING jobs of ``queue`` (default: the settings'
        queue), or None: how long an idle worker may sleep."""
        return self.backend.next_due_at(self._queues(queue), self._now())

    @read
    def newest_write(self) -> float | None:
        """When the newest job was last written (``updated_at``), or None: ahead of the clock, the
        clock was set back since it was written (see ``restamp_ahead``)."""
        return self.backend.newest_write()

    def restamp_ahead(self, step: float, ahead: float, actor: str = "rescuer") -> list[int]:
        """After this host's clock was set back by ``step`` seconds (a worker's rescuer sees it,
        SQLite): the PENDING jobs written before the step, more than ``ahead`` seconds ahead of
        the clock now, are made as if written now (``run_at`` moves back as far, a ``restamped``
        event by ``actor``), so that they do not wait for the clock to catch up. Their ids."""
        return self.backend.restamp_ahead(self.clock(), step, ahead, _text_arg(actor, "actor"))

    def listener(self, worker_id: str, queue: str | Sequence[str] | None = None) -> Listener:
        """Open a wake-up channel: ``wait(timeout)`` returns early when work may have arrived
        on ``queue``. Its ``address`` goes into the worker's registry row; ``close()`` it."""
        return self.backend.listener(worker_id, self._queues(queue))

    # -- time ------------------------------------------------------------------------------
    def wall_time(self) -> float:
        """This host's wall clock, corrected to the store's (``clock_offset``): the default
        ``clock``, and the worker registry's times whatever the clock (see below)."""
        return time.time() + self.clock_offset

    def sync_clock(self) -> float:
        """Measure this host's clock against the store's again (the first measurement is made at
        open; ``_check_clock`` makes the others) and correct the default clock by it
        (``clock_offset``). Returns the offset measured: the store's clock less this
        host's, in seconds. A store on this host (SQLite) reads nothing: 0.0. A measurement whose
        every read took ``CLOCK_SKEW_CORRECTED_SECONDS`` or more (a server too busy to answer
        promptly) is told but not used: its error, up to half a round trip, could pass for skew."""
        if self.single_host:
            return 0.0
        measured, trip = clock_offset_of(self.backend.store_time, CLOCK_SAMPLES)
        if self._watching_clock:
            self._correct_clock(measured, trip)
        return measured

    def _check_clock(self) -> None:
        """Called first by every call that stamps or judges a lease (enqueue, claim, heartbeat,
        rescue) while ``_watching_clock``: measures the clock again once ``CLOCK_SYNC_SECONDS``
        have passed, and at once when this host's clock stepped (``_clock_due``). A clock set
        back two minutes would otherwise stamp leases already expired by every other host's
        clock until the next measurement."""
        due = self._clock_due()
        if due is not None:
            self._measure_clock(due)

    def _now(self) -> float:
        """The clock's time for a call off the lease path that stamps or judges a time: operator
        actions, limits and schedules, and the reads that tell ages (stats, gauges, history).
        Measured again first when due, as the lease calls are (``_check_clock``; they inline the
        test to keep their per-call cost): a process that never claims (an app, ``jobq metrics``)
        kept the offset of its start for good, and a host whose clock then stepped resubmitted
        jobs two minutes late."""
        if self._watching_clock:
            self._check_clock()
        return self.clock()

    def _wall_now(self) -> float:
        """``wall_time()`` for the registry's writes, measured again first when due (``_now``)."""
        if self._watching_clock:
            self._check_clock()
        return self.wall_time()

    def _clock_due(self) -> str | None:
        """Why the clock must be measured again, or None (two clock reads, no round trip):
        ``"interval"`` once ``CLOCK_SYNC_SECONDS`` have passed since the last time, ``"step"``
        before then when this host's wall clock moved against its monotonic one (it stepped: a
        VM resumed from a snapshot, NTP stepping a large offset). After a long quiet spell NTP's
        slewing alone (up to 0.5 ms a second) can move it that far: not told as a step."""
        checked = time.monotonic()
        if checked - self._clock_checked_at >= CLOCK_SYNC_SECONDS:
            return "interval"
        if abs(time.time() - checked - self._clock_step) >= CLOCK_SKEW_CORRECTED_SECONDS:
            return "step"
        return None

    def _measure_clock(self, due: str) -> None:
        if due == "step":
            log.warning("this host's clock stepped: measuring it against the database server's again")
        checked = time.monotonic()
        self._clock_checked_at, self._clock_step = checked, time.time() - checked
        try:
            self.sync_clock()
        except StorageError as exc:  # the call that follows meets the same error and reports it
            log.debug("could not read the database server's clock: %s", exc)
            self._measure_clock_soon()

    def _measure_clock_soon(self) -> None:
        """A measurement that told nothing (the server away, a reply lost, every read too slow)
        is made again ``CLOCK_RETRY_SECONDS`` from now: not a whole sync interval later, as a
        step it was made for would stay uncorrected that long; not at every call either, which
        would wait for an absent server twice."""
        self._clock_checked_at = time.monotonic() - CLOCK_SYNC_SECONDS + CLOCK_RETRY_SECONDS

    def _correct_clock(self, measured: float, trip: float) -> None:
        """Use the offset ``measured`` by a read of round trip ``trip`` (``clock_offset_of``)."""
        if trip >= CLOCK_SKEW_CORRECTED_SECONDS:
            # A server too busy to answer promptly: the error could pass for skew. At open too,
            # where a host a minute off would otherwise stamp by its own clock for a minute.
            log.debug("the database server's clock took %.1f s to read: measured again soon", trip)
            self._measure_clock_soon()
            return
        self.clock_skew = -measured
        offset = measured if abs(measured) >= CLOCK_SKEW_CORRECTED_SECONDS else 0.0
        if abs(offset - self.clock_offset) < _CLOCK_OFFSET_KEPT_WITHIN_SECONDS:
            return  # the measurement's own noise: times do not jump back and forth by it
        if offset:
            log.warning(
                "this host's clock is %.1f s %s the database server's: jobq uses the server's time "
                "(keep the hosts' clocks in sync, with NTP)",
                abs(offset),
                "behind" if offset > 0 else "ahead of",
            )
        else:
            log.info("this host's clock agrees with the database server's again")
        self.clock_offset = offset

    # -- worker registry ---------------------------------------------------------------------
    # Registry times are wall-clock seconds (wall_time()), not the facade's clock: the rows are
    # for people, and `jobq workers` and the apps compare them with the wall clock. Corrected
    # to the store's clock all the same: another host's rescuer judges them.
    @property
    def single_host(self) -> bool:
        """True when every process using this store runs on this machine (SQLite), so a worker
        whose pid is gone here has exited (``Backend.single_host``)."""
        return self.backend.single_host

    @property
    def store_generation(self) -> int:
        """How many times this handle found its database replaced under it (SQLite: the file
        removed or replaced by hand, ``StoreReplaced``); 0 on PostgreSQL. A job claimed at a
        lower generation is of a file no longer at the path: its run is dropped, nothing more
        written for it (a heartbeat or completion would reach another job of the same id)."""
        return self.backend.generation

    def register_worker(self, info: WorkerInfo) -> None:
        """Add (or replace) a worker's registry row, shown by ``jobq workers`` and the apps."""
        self.backend.register_worker(info)

    def worker_seen(self, worker_id: str, current_jobs: Sequence[int], done: int, failed: int) -> bool:
        """Refresh a worker's row: seen now, running ``current_jobs``, with these counts so far.
        False when the worker has no row (see ``Backend.worker_seen``)."""
        # Measured again first when due, as the heartbeat is: a step of this host's clock landing
        # between the worker's heartbeat and this beat wrote the row that far off the server's
        # time, and a host whose clock was set back was marked lost by the others (flaky
        # test_clock_skew.py::test_a_worker_whose_clock_steps_back_measures_it_again_at_once).
        now, skew = self._wall_now(), self.clock_skew
        return self.backend.worker_seen(worker_id, now, current_jobs, done, failed, skew, self.clock_base())

    def clock_base(self) -> float | None:
        """This host's wall clock less its monotonic clock, now (``WorkerInfo.clock_base``): it
        moves only when the wall clock steps or the host sleeps. None with a ``clock`` of the
        caller's, which no step of the host's clock moves."""
        return time.time() - time.monotonic() if self.default_clock else None

    def worker_stopped(self, worker_id: str, reason: WorkerEnd = WorkerEnd.STOPPED) -> None:
        """Mark a worker's row ended now: ``stopped`` by the worker itself on a clean shutdown,
        ``crashed`` by a rescuer that found its pid gone."""
        self.backend.worker_stopped(worker_id, self._wall_now(), reason)

    def mark_lost_workers(self, seen_before: float) -> list[str]:
        """Mark workers not heard from since ``seen_before`` (UNIX seconds) ``lost``; their ids."""
        return self.backend.mark_lost_workers(seen_before, self._wall_now())

    def settle_waiters(self) -> bool:
        """Forget the ``wait`` registrations of waiters that crashed, and once none is left, let
        finishing transactions skip looking for waiters again (PostgreSQL; the rescuer does this
        every ``PRUNE_INTERVAL_SECONDS``). True when they were let."""
        return self.backend.settle_waiters(self._wall_now())

    def prune_workers(self, older_than: float) -> int:
        """Delete the registry rows of workers that ended more than ``older_than`` seconds ago
        (the rescuer does, keeping ``WORKER_ROWS_KEPT_SECONDS``); how many went."""
        return len(self.backend.prune_workers(self._wall_now() - older_than))

    # -- operators -------------------------------------------------------------------------
    def _one(self, results: Sequence[ActionResult], job_id: int, action: str) -> ActionResult:
        result = results[0]
        if result.status is None:
            raise JobNotFound(job_id)
        if result.held_by is not None:
            raise DuplicateJob(str(self.get(job_id).idempotency_key), result.held_by)
        if not result.ok:
            raise InvalidTransition(job_id, action, result.status.value)
        return result

    def resubmit(self, job_id: int, *, actor: str | None = None) -> ActionResult:
        """FAILED / CANCELLED / COMPLETED -> PENDING (attempts reset, next run).

        Raises JobNotFound, InvalidTransition, or DuplicateJob when a newer job holds this
        one's 'active' key (nothing changed)."""
        return self._one(self.resubmit_many(ids=[job_id], actor=actor), job_id, "resubmit")

    def cancel(self, job_id: int, *, actor: str | None = None) -> ActionResult:
        """PENDING / FAILED -> CANCELLED; PROCESSING -> cancellation requested (the worker
        stops the handler at its next heartbeat and the job ends CANCELLED)."""
        return self._one(self.cancel_many(ids=[job_id], actor=actor), job_id, "cancel")

    def move(self, job_id: int, to: str, *, actor: str | None = None) -> ActionResult:
        """Move a PENDING / FAILED / CANCELLED job to queue ``to`` (its status, run time and
        attempts stay; a ``moved`` event records from where). Raises JobNotFound, or
        InvalidTransition for a job running or COMPLETED; InvalidPayload for a name no worker
        could serve."""
        return self._one(self.move_many(to, ids=[job_id], actor=actor), job_id, "move")

    def move_many(
        self,
        to: str,
        *,
        ids: Sequence[int] | None = None,
        where: JobFilter | None = None,
        actor: str | None = None,
    ) -> ActionResults:
        """Move by ids or by filter to queue ``to``, as ``resubmit_many`` acts: one result per job
        (a job running or COMPLETED is refused, one in ``to`` already is left as it is). E.g. the
        jobs a producer put in a mistyped queue: ``move_many("mail", where=JobFilter(queues=("mial",)))``."""
        queue = check_queue_name(to, "the queue to move to")
        backend = self.backend
        return self._act(lambda target, who, now: backend.move(target, queue, who, now), ids, where, actor)

    def resubmit_many(
        self, *, ids: Sequence[int] | None = None, where: JobFilter | None = None, actor: str | None = None
    ) -> ActionResults:
        """Resubmit by ids or by filter; one result per job (illegal ones change nothing), in a
        compact read-only sequence (``ActionResults``: a filter may match millions of jobs)."""
        return self._act(self.backend.resubmit, ids, where, actor)

    def cancel_many(
        self, *, ids: Sequence[int] | None = None, where: JobFilter | None = None, actor: str | None = None
    ) -> ActionResults:
        """Cancel by ids or by filter; one result per job (illegal ones change nothing), as
        ``resubmit_many``'s."""
        return self._act(self.backend.cancel, ids, where, actor)

    def _act(
        self,
        action: Callable[[JobFilter, str, float], ActionResults],
        ids: Sequence[int] | None,
        where: JobFilter | None,
        actor: str | None,
    ) -> ActionResults:
        """An operator action on ``ids`` and/or ``where`` (see ``operator_targets``)."""
        target, impossible = operator_targets(ids, where)
        if target is None:
            return ActionResults(impossible)
        return action(target, actor_of(actor, self.settings), self._now()) + impossible

    def purge(
        self,
        *,
        older_than: float,
        statuses: Sequence[JobStatus | str] = (JobStatus.COMPLETED,),
        limit: int | None = None,
    ) -> int:
        """Delete jobs of ``statuses`` that finished more than ``older_than`` seconds ago (and their
        events), at most ``limit`` of them (None: all), those that finished first; returns how
        many. Runs ``PURGE_CHUNK_JOBS`` jobs a transaction, pausing after each on SQLite so that
        workers keep writing: a purge of millions takes a while, and lets them."""
        wanted = purged_statuses(statuses)
        return self.backend.purge(wanted, purge_cutoff(self._now(), older_than), _purge_limit(limit))

    def backup(self, dest: str | os.PathLike[str], *, compact: bool = False) -> QueueCopy:
        """Copy the queue as it stood at one commit to the new file ``dest``, while producers and
        workers go on (SQLite). The copy holds every payload and is made private (mode 0600); an
        existing file is never overwritten. ``jobq.restore`` puts such a copy back.

        ``compact``: leave out the free pages that purges leave behind (a SQLite file never
        shrinks by itself); slower, as every row and index is written anew. Restoring such a copy
        (every process stopped) gives the queue back the disk space."""
        return self.backend.backup(_file_argument(dest, "the backup"), compact=bool(compact))

    # -- reads -----------------------------------------------------------------------------
    @read
    def get(self, job_id: int) -> Job:
        """The job, or JobNotFound."""
        if job_id_or_none(job_id) is None:
            raise JobNotFound(job_id)
        job = self.backend.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until job ``job_id`` is COMPLETED, FAILED or CANCELLED, and return it (its
        ``result``, ``status``, ``last_error``).

        Woken by the backend's wake-up channel as the finishing transaction commits (PostgreSQL:
        LISTEN on the schema's done channel; SQLite: a datagram to this waiter), whichever path
        finished it (a worker, the rescuer, an operator, an application's transaction), not by
        polling; it also reads the job every ``WAIT_POLL_SECONDS`` in case a wake-up was missed
        (a status set by hand in SQL, a LISTEN connection lost meanwhile).

        Raises JobNotFound (also if the job is purged meanwhile); TimeoutError after ``timeout``
        seconds (None: wait for ever).

        >>> job = queue.wait(queue.enqueue({"n": 1}), timeout=30)  # doctest: +SKIP
        """
        check_wait_timeout(timeout)
        job = self.get(job_id)
        if job.status.value in FINISHED:
            return job
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = self.backend.finish_waiter(job_id)
        registration: int | None = None
        registered_at = float("-inf")
        # The first read too waits for a writer: a finish may have checked for waiters just before
        # this one registered (PostgreSQL), or be in an application's open transaction (SQLite).
        woken = True
        try:
            while True:
                if getattr(waiter, "listening", True) and time.time() - registered_at > WAITER_ROW_SECONDS / 2:
                    # Registered (and listening) before the read: a finish after it wakes us.
                    old, registered_at = registration, time.time()
                    registration = self.backend.register_waiter(
                        job_id, registered_at, registered_at + WAITER_ROW_SECONDS
                    )
                    self.backend.unregister_waiter(old)
                    woken = True
                # Listening before this read: a finish committed after it wakes the waiter. After
                # a wake-up, read once the current writer is done (SQLite wakes from inside an
                # application's transaction, before its COMMIT).
                found = self.backend.get_after_writers(job_id) if woken else self.backend.get(job_id)
                if found is None:
                    raise JobNotFound(job_id)
                job = found
                if job.status.value in FINISHED:
                    return job
                pause = WAIT_POLL_SECONDS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(
                            f"job {job_id} did not finish within {timeout:g} s (it is {job.status.value})"
                        )
                    pause = min(pause, left)
                woken = waiter.wait(pause)
        finally:
            waiter.close()
            with contextlib.suppress(Exception):  # an expiry clears it if this fails
                self.backend.unregister_waiter(registration)

    @read
    def events(self, job_id: int) -> list[Event]:
        """The job's history, oldest first."""
        if job_id_or_none(job_id) is None:  # no job has it: no events (ValueError for no int)
            return []
        return self.backend.events(job_id)

    @read
    def recent_events(self, limit: int = 100, kinds: Sequence[str] = ()) -> list[Event]:
        return self.backend.recent_events(check_rows(limit), kinds)

    @read
    def list_jobs(self, where: JobFilter | None = None, page: Page | None = None) -> list[Job]:
        """Jobs matching ``where``, sorted and sliced by ``page`` (also available as ``list``)."""
        return self.backend.list_jobs(check_filter(where), check_page(page or Page()))

    @read
    def count(self, where: JobFilter | None = None, *, up_to: int | None = None) -> int:
        """How many jobs match ``where``; with ``up_to``, at most that many: the count stops
        there, so it takes the same time at any table size (an uncapped count of 10,000,000
        COMPLETED jobs reads them all: ~1 s). ``up_to`` is at least 1 (ValueError)."""
        return self.backend.count_jobs(check_filter(where), _count_up_to(up_to))

    @read
    def list_page(self, where: JobFilter | None = None, page: Page | None = None) -> tuple[int, list[Job]]:
        """How many jobs match ``where`` and the ``page`` of them, from one read (they always agree)."""
        return self.backend.list_page(check_filter(where), check_page(page or Page()))

    @read
    def counts(self) -> dict[str, int]:
        """Jobs per status (every status present), counted over every stored row: its time grows
        with the store (70 ms at 130,000 jobs on PostgreSQL, seconds at millions). ``stats()``
        counts the live jobs exactly and the finished ones in a window: its time follows the
        backlog, not the store."""
        return self.backend.counts()

    @read
    def stats(self) -> QueueStats:
        """Counts per status and queue, and what ops shows at a glance. Finished jobs are counted
        among the newest ``STATS_FINISHED_WINDOW`` (see ``QueueStats.finished_window``), so this
        stays fast at any size; ``counts()`` counts every row."""
        return self.backend.stats(self._now())

    @read
    def latest(self, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        """The most recently updated jobs (of ``status``), newest first, in bounded time at any
        table size (see ``Backend.latest_jobs``; ``list`` sorted by ``updated_at`` reads every row)."""
        return self.backend.latest_jobs(None if status is None else status_of(status), check_rows(limit))

    @read
    def history(self, *, window: float = 3600.0, bucket: float = 60.0) -> list[Bucket]:
        _check_span(window, bucket)
        now = self._now()
        return self.backend.history(now - window, bucket, now)

    @read
    def due_history(
        self, *, window: float = 3600.0, bucket: float = 60.0, limit: int = DUE_HISTORY_SAMPLE_LIMIT
    ) -> DueHistory:
        """Due PENDING jobs at the end of each bucket of the last ``window`` seconds, and how long
        each queue's jobs waited for a worker (due to claimed), derived from the job rows: every
        PENDING and PROCESSING job and the newest ``limit`` finished ones, so it stays cheap at
        any table size (``DueHistory.covers_since`` says from when it is exact)."""
        _check_span(window, bucket)
        now = self._now()
        return self.backend.due_history(now - window, bucket, now, check_rows(limit))

    @read
    def blockers(self) -> list[str]:
        """Who holds up this queue's writes now, one line each, with what to do: on PostgreSQL the
        sessions that have kept one of the database's sessions waiting 2 s or more for a lock
        while holding a lock on the queue's tables (an application's transaction left open); on
        SQLite the processes holding its write lock that are stopped, or that held it for
        ``HOLD_PROBE_SECONDS`` (1 s) while nobody committed (a transaction left open in a `sqlite3`
        shell): SQLite's call takes up to that long while such a process holds the lock. Empty
        when nothing does."""
        return self.backend.blockers()

    @read
    def workers(self, limit: int = 200) -> list[WorkerInfo]:
        """Registered workers, newest start first: every running one, and the newest ``limit``
        stopped ones (a worker restarted in a loop adds a row at each start)."""
        return self.backend.list_workers(check_rows(limit))

    # -- observability ---------------------------------------------------------------------
    def progress(self, job: Job, fraction: float | None = None, message: str | None = None) -> bool:
        """Store how far the job's run has come (fenced by its lease, like a heartbeat).

        ``fraction`` is clamped to [0, 1]; ``message`` is cut to ``PROGRESS_MESSAGE_MAX_CHARS``.
        Returns True when an operator asked to cancel the job. Raises LeaseLost when the job is
        no longer this lease's (the refusal is recorded). Handlers call ``ctx.progress``, which
        throttles.
        """
        fraction, message = check_progress(fraction, message)
        result = self.backend.progress(lease_of(job), fraction, message, self.clock)
        if not result.alive:
            raise LeaseLost(job.id, "progress")
        return result.cancel_requested

    @read
    def progress_of(self, job_ids: Sequence[int]) -> dict[int, Progress]:
        """The last progress each of ``job_ids`` reported (jobs that reported none are absent)."""
        return self.backend.progress_of(_split_ids(job_ids)[0])

    @read
    def trace_contexts(self, job_ids: Sequence[int]) -> dict[int, str]:
        """The trace context stored with each of ``job_ids`` at enqueue, where one was."""
        return self.backend.trace_contexts(_split_ids(job_ids)[0])

    @read
    def queue_gauges(self, backlog: bool = True) -> dict[str, QueueGauges]:
        """Due and scheduled PENDING jobs, the oldest due, and PROCESSING jobs, per queue (cheap:
        partial indexes only; what ``jobq metrics`` reads). ``backlog=False`` reads the PROCESSING
        part only: the PENDING fields are then 0 and None (see ``Backend.queue_gauges``)."""
        return self.backend.queue_gauges(self._now(), backlog)

    @read
    def last_event_id(self, before: float | None = None) -> int:
        """Where a cursor over events starts: the newest event's id (0 when none), or with
        ``before`` (a time) the newest one's recorded before it."""
        return self.backend.last_event_id(_moment_or_none(before, "before"))

    @read
    def events_after(self, after_id: int, limit: int = 10_000) -> list[MetricEvent]:
        """Events after ``after_id`` in id order, with their job's queue and times (for metrics)."""
        return self.backend.events_after(after_id, check_rows(limit))

    @read
    def last_job_id(self, before: float | None = None) -> int:
        """Where a cursor over enqueues starts: the newest job's id (0 when none), or with
        ``before`` (a time) the newest one's made before it."""
        return self.backend.last_job_id(_moment_or_none(before, "before"))

    @read
    def enqueue_totals(
        self, after_id: int, limit: int = 10_000, until: float = math.inf
    ) -> tuple[int, dict[str, int], bool]:
        """For the metrics exporter: the jobs made after the job ``after_id`` (at most ``limit``,
        none made after ``until``) counted by queue in the store: ``(the last id covered,
        {queue: jobs}, whether younger jobs were held back)`` (enqueues are not events)."""
        return self.backend.enqueue_totals(after_id, until, check_rows(limit))

    @read
    def completion_cursor(self, now: float | None = None) -> tuple[float, int]:
        """Where a cursor over completions starts: ``(finished_at, id)`` of the newest job finished
        at or before ``now`` (the queue's clock by default; a time after it is one written by hand)."""
        return self.backend.completion_cursor(self._now() if now is None else now)

    @read
    def completions_after(
        self, after: tuple[float, int], limit: int = 10_000, until: float = math.inf
    ) -> list[MetricEvent]:
        """Jobs completed after the cursor ``after`` and no later than ``until``, oldest first, as
        ``completed`` entries with their queue and times (for metrics: completions are not events)."""
        return self.backend.completions_after(after, until, check_rows(limit))

    @read
    def event_totals(
        self, after_id: int, counted: Sequence[str], limit: int = 10_000, until: float = math.inf
    ) -> EventTotals:
        """``events_after`` for the metrics exporter: the kinds in ``counted`` (``enqueued``:
        one per job) summed by queue and kind in the store, the others one each."""
        return self.backend.event_totals(after_id, until, check_rows(limit), counted)

    @read
    def completion_totals(
        self, after: tuple[float, int], bounds: HistogramBounds, limit: int = 10_000, until: float = math.inf
    ) -> tuple[tuple[float, int], dict[str, CompletionTotals]]:
        """``completions_after`` summed per queue in the store (count, and wait / run time /
        attempts against ``bounds``), with the cursor after the last job counted: what the
        metrics exporter folds in, at no Python cost per completed job. At most ``limit`` jobs;
        fewer may be folded while more are left (a fold ends between two instants when it can),
        so only an empty result means the cursor caught up."""
        return self.backend.completion_totals(after, until, check_rows(limit), bounds)

    # -- schedules (jobq.schedules; enqueued by every worker's scheduler) -------------------
    def add_schedule(
        self,
        name: str,
        *,
        task: str,
        cron: str | None = None,
        every: float | str | None = None,
        zone: str = "UTC",
        queue: str | None = None,
        payload: Any = None,
        priority: int = 0,
        catchup: str = "latest",
        overlap: bool = True,
    ) -> ScheduleInfo:
        """Create or replace the schedule ``name`` at run time (as ``jobq schedules add`` does).

        Its first slot is the first after now; replacing keeps its pause and next run unless
        its timing (cron, every, zone) changed. Raises ConfigError for a bad expression or zone,
        InvalidPayload for a payload that is not JSON."""
        spec = Schedule(
            name=name,
            task=_check_name(task, "task name"),
            cron=cron,
            every=parse_duration(every) if isinstance(every, str) else every,
            zone=zone,
            queue=self._queue_name(queue),
            payload=payload,
            priority=priority,
            catchup=catchup,
            overlap=overlap,
        )
        return self.save_schedule(spec, origin="api")

    def save_schedule(self, spec: Schedule, *, origin: str = "code") -> ScheduleInfo:
        """Store a schedule (a worker stores those declared with ``@jobq.periodic`` as it starts).

        Raises InvalidPayload when its jobs could not be enqueued (a payload over the size
        limit, a priority out of range): refused here, not at every firing."""
        now = self._now()
        # The job of its next slot, made and thrown away: what firing would refuse is refused now
        # (a 100 KB payload was stored, and every scheduler tick then failed on it).
        next_slot = spec.next_slot(now)
        self._new_job(
            spec.job_payload(next_slot), queue=spec.queue, task=spec.task, priority=spec.priority, delay=None,
            run_at=None, key=spec.job_key(next_slot)[0], max_attempts=None, timeout=None, now=now,
        )  # fmt: skip
        info = ScheduleInfo(
            name=spec.name,
            task=spec.task,
            queue=spec.queue,
            payload_json=None if spec.payload is None else encode_json(spec.payload),
            cron=spec.cron,
            every=spec.every,
            zone=spec.zone,
            priority=spec.priority,
            catchup=spec.catchup,
            overlap=spec.overlap,
            origin=origin,
            next_run_at=spec.next_slot(now),
        )
        self.backend.save_schedule(info, now)
        return next(s for s in self.schedules() if s.name == spec.name)

    @read
    def schedules(self, *, due: bool = False) -> list[ScheduleInfo]:
        """Every stored schedule by name, or (``due``) the unpaused ones due now."""
        return self.backend.list_schedules(self._now() if due else None)

    def fire_schedule(self, info: ScheduleInfo, slots: Sequence[float], next_run_at: float) -> list[int] | None:
        """Enqueue the jobs of ``slots`` and move ``info`` on to ``next_run_at``, in one
        transaction, if it is still at ``info.next_run_at`` (else None: another process did)."""
        spec = schedule_of(info)
        now = self._now()
        jobs = []
        for slot in slots:
            key, scope = spec.job_key(slot)
            jobs.append(
                self._new_job(
                    spec.job_payload(slot),
                    queue=spec.queue,
                    task=spec.task,
                    priority=spec.priority,
                    delay=None,
                    run_at=None,
                    key=key,
                    max_attempts=None,
                    timeout=None,
                    now=now,
                    key_scope=scope,
                )
            )
        last = max(slots) if slots else None
        return self.backend.fire_schedule(info.name, info.next_run_at, next_run_at, last, jobs, now)

    @read
    def schedule_history(
        self, name: str | None = None, *, limit: int = SCHEDULE_HISTORY_LIMIT_DEFAULT
    ) -> list[ScheduleAction]:
        """Who paused or resumed ``name`` (or any schedule, for None) and when, newest first, at
        most ``limit`` entries. Kept when a schedule is removed: it is an audit history."""
        check_rows(limit)
        return self.backend.schedule_actions(None if name is None else _text_arg(name, "name"), min(limit, INT32_MAX))

    def pause_schedule(self, name: str, *, actor: str | None = None) -> None:
        """Stop enqueueing ``name``'s slots (recorded: who, when). Raises ScheduleNotFound."""
        if not self.backend.pause_schedule(
            _text_arg(name, "name"), True, actor_of(actor, self.settings), self._now(), None
        ):
            raise ScheduleNotFound(name)

    def resume_schedule(self, name: str, *, actor: str | None = None) -> None:
        """Enqueue ``name``'s slots again, from the first slot after now (the slots passed while
        it was paused never run). Raises ScheduleNotFound."""
        found = [s for s in self.schedules() if s.name == name]
        if not found:
            raise ScheduleNotFound(name)
        now = self._now()
        next_run_at = schedule_of(found[0]).next_slot(now)
        if not self.backend.pause_schedule(name, False, actor_of(actor, self.settings), now, next_run_at):
            raise ScheduleNotFound(name)

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule (a worker that still declares it in code stores it again). Raises ScheduleNotFound."""
        if not self.backend.delete_schedule(_text_arg(name, "name")):
            raise ScheduleNotFound(name)

    # -- flow control (docs/flow-control.md) ------------------------------------------------
    def pause(self, queue: str, *, actor: str | None = None) -> QueueControl:
        """Stop claims from ``queue`` on every worker and host (running jobs finish normally); its
        jobs stay PENDING. Recorded in the queue's history (who, when)."""
        return self._update_control(queue, ControlUpdate(paused=True), actor)

    def resume(self, queue: str, *, actor: str | None = None) -> QueueControl:
        """Claim from ``queue`` again; wakes its idle workers at once."""
        return self._update_control(queue, ControlUpdate(paused=False), actor)

    def set_limits(
        self,
        queue: str,
        *,
        concurrency: int | _Keep | None = KEEP,
        per_key: int | _Keep | None = KEEP,
        rate: str | tuple[int, float] | _Keep | None = KEEP,
        actor: str | None = None,
    ) -> QueueControl:
        """Set (or with None, clear) ``queue``'s limits; those not named are kept. Enforced by the
        claim on every worker and host:

        - ``concurrency``: at most this many of the queue's jobs PROCESSING at once;
        - ``per_key``: at most this many PROCESSING per ``concurrency_key`` (jobs without one
          count only against ``concurrency``);
        - ``rate``: at most COUNT claims per window, ``"100/s"``, ``"10/min"`` or ``(count, seconds)``.

        Raises ConfigError for a bad value (nothing is changed). Recorded in the queue's history.
        """
        names: set[str] = set()
        values: dict[str, Any] = {}
        if not isinstance(concurrency, _Keep):
            names.add("concurrency")
            values["concurrency"] = None if concurrency is None else check_limit(concurrency, "concurrency")
        if not isinstance(per_key, _Keep):
            names.add("per_key")
            values["per_key"] = None if per_key is None else check_limit(per_key, "per-key limit")
        if not isinstance(rate, _Keep):
            names.update(("rate_count", "rate_window"))
            if rate is None:
                values["rate_count"] = values["rate_window"] = None
            else:
                if not isinstance(rate, str) and not (isinstance(rate, tuple | list) and len(rate) == 2):
                    raise ConfigError(f"rate must be 'COUNT/UNIT' or (count, seconds), not {rate!r:.40}")
                count, window = parse_rate(rate) if isinstance(rate, str) else check_rate(*rate)
                values["rate_count"], values["rate_window"] = count, window
        return self._update_control(queue, ControlUpdate(limits=frozenset(names), **values), actor)

    def clear_limits(self, queue: str, *, actor: str | None = None) -> QueueControl:
        """Remove every limit of ``queue`` (a pause stays: ``resume`` ends it)."""
        return self.set_limits(queue, concurrency=None, per_key=None, rate=None, actor=actor)

    def _update_control(self, queue: str, update: ControlUpdate, actor: str | None) -> QueueControl:
        if not isinstance(queue, str) or not queue:
            raise ConfigError("a queue name is needed (e.g. default)")
        name = check_queue_name(queue)
        return self.backend.update_control(name, update, actor_of(actor, self.settings), self._now())

    @read
    def controls(self) -> list[QueueControl]:
        """Every queue that has (or had) flow control, by name: paused or not, and its limits."""
        return self.backend.controls()

    @read
    def control_history(self, queue: str | None = None, *, limit: int = 50) -> list[ControlEvent]:
        """Who paused, resumed or changed the limits of ``queue`` (None: any queue), newest first."""
        return self.backend.control_history(None if queue is None else _text_arg(queue, "queue"), check_rows(limit))

    list = list_jobs  # last in the class: the name shadows the builtin for annotations below it


def read_methods() -> frozenset[str]:
    """The names of ``Queue``'s methods marked ``@read`` (aliases such as ``list`` included)."""
    return frozenset(name for name, member in vars(Queue).items() if getattr(member, READ_MARK, False))


def operator_targets(ids: Sequence[int] | None, where: JobFilter | None) -> tuple[JobFilter | None, list[ActionResult]]:
    """What an operator action on ``ids`` and/or ``where`` runs on (None: nothing), and the
    "not found" results of the ids no job can have (above 2**63-1: the driver raised
    OverflowError on them). ValueError for an id that is no whole number."""
    impossible: list[ActionResult] = []
    if ids is not None:
        ids, beyond = _split_ids(ids, "ids")
        impossible = [ActionResult(i, False, None) for i in beyond]
        if not ids:
            return None, impossible
    return _target(ids, None if where is None else check_filter(where)), impossible


def _target(ids: Sequence[int] | None, where: JobFilter | None) -> JobFilter:
    if ids is not None and where is not None:
        # Every field of the filter (the error and time bounds were dropped, so those ids were
        # acted on whatever their error or age).
        return dataclasses.replace(where, ids=tuple(ids))
    if ids is not None:
        return JobFilter(ids=tuple(ids))
    if where is None:
        raise InvalidPayload("name the jobs: ids or a filter")
    return where
