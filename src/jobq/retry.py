"""Retry policy: the backoff (exponential with jitter, capped), a task's policy, and the policy
given to one enqueue.

Precedence, field by field (max_attempts, timeout, backoff, retry_on): what the enqueue set, then
the task's ``@jobq.task`` default as registered in the worker that runs the job, then the queue's
settings. A worker applies a task's defaults to every job of that task, also to jobs enqueued by a
producer that never imported the task's module (``jobq enqueue --task mod.fn``, another service):
``timeout`` and ``max_attempts`` when the run starts, ``backoff`` and ``retry_on`` when it fails.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobq.config import BACKOFF_BASE_SECONDS_DEFAULT, BACKOFF_CAP_SECONDS_DEFAULT, DURATION_MAX_SECONDS
from jobq.errors import ConfigError, InvalidPayload
from jobq.job import Job

log = logging.getLogger(__name__)

_EXPONENT_MAX = 1023
"""``2.0 ** 1024`` raises OverflowError: from attempt 1,025 on, every failure of a job with many
attempts killed the worker's run of it (the job stayed PROCESSING). Any base above 0 times
``2.0 ** 1023`` is past every cap (a product too large is infinity, not an error)."""


def backoff_seconds(
    attempt: int,
    *,
    base: float = BACKOFF_BASE_SECONDS_DEFAULT,
    cap: float = BACKOFF_CAP_SECONDS_DEFAULT,
    rng: random.Random | None = None,
) -> float:
    """Delay before the retry that follows failed ``attempt`` (1-based).

    ``base * 2**(attempt-1)``, capped at ``cap``, then scaled by a random factor in [0.5, 1.0]
    ("equal jitter"): retries of jobs that failed together spread out instead of stampeding,
    and no retry comes sooner than half the nominal delay.
    """
    nominal = min(cap, base * 2.0 ** min(max(0, attempt - 1), _EXPONENT_MAX))
    draw = rng.random() if rng is not None else random.random()
    return nominal * (0.5 + 0.5 * draw)


BackoffSpec = float | list[float] | dict[str, float]
"""A retry delay as data (JSON, so an enqueue can store it): constant seconds (``10``), seconds
per failed attempt with the last one repeated (``[1, 10, 60]``), or exponential with jitter as the
queue's own (``{"base": 2, "cap": 600}``, both in seconds)."""

Backoff = BackoffSpec | Callable[[int], float]
"""A task's retry delay: a :data:`BackoffSpec`, or a function of the failed attempt (1-based)."""

_BACKOFF_HELP = "seconds from 0 to 100 years, a list of them, or {'base': s, 'cap': s}"
POLICY_LIST_MAX = 100
"""Most delays in a backoff list and most exception names in ``retry_on``; a name has at most
``POLICY_NAME_MAX_CHARS`` characters. The policy is stored with every job: a list of 50,000
delays made a 200 KB policy beside a payload held to 64 KB."""
POLICY_NAME_MAX_CHARS = 200


def _seconds(value: object) -> float | None:
    """``value`` as seconds from 0 to ``DURATION_MAX_SECONDS``; None otherwise (a backoff of 1e300
    was stored, and each failure's retry was then refused as out of range: the worker tried to
    record it again and again, and the job stayed PROCESSING)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= DURATION_MAX_SECONDS:
        return None
    return float(value)


def backoff_spec(value: object, error: type[Exception] = InvalidPayload) -> BackoffSpec:
    """``value`` checked as a :data:`BackoffSpec` (normalised to floats); ``error`` in one line."""
    one = _seconds(value)
    if one is not None:
        return one
    if isinstance(value, list | tuple) and 0 < len(value) <= POLICY_LIST_MAX:
        each = [_seconds(v) for v in value]
        if all(v is not None for v in each):
            return [v for v in each if v is not None]
    if isinstance(value, Mapping) and set(value) == {"base", "cap"}:
        base, cap = _seconds(value["base"]), _seconds(value["cap"])
        if base is not None and cap is not None:
            return {"base": base, "cap": cap}
    raise error(f"backoff must be {_BACKOFF_HELP} (at most {POLICY_LIST_MAX}), not {value!r:.60}")


def spec_delay(spec: BackoffSpec, attempt: int) -> float:
    """Seconds before the retry after failed ``attempt`` (1-based) by a checked ``spec``."""
    if isinstance(spec, list):
        return spec[min(max(attempt, 1), len(spec)) - 1]
    if isinstance(spec, dict):
        return backoff_seconds(attempt, base=spec["base"], cap=spec["cap"])
    return float(spec)


def exception_name(cls: type[BaseException]) -> str:
    """The name ``retry_on`` stores for an exception class: ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_name(value: object) -> str | None:
    if isinstance(value, type) and issubclass(value, BaseException):
        return exception_name(value)
    if not isinstance(value, str) or not value or len(value) > POLICY_NAME_MAX_CHARS:
        return None
    parts = value.split(".")
    if not all(p.isidentifier() or p == "<locals>" for p in parts):
        return None
    return value if len(parts) > 1 else f"builtins.{value}"  # a bare name: a built-in exception


def retry_on_names(value: object, error: type[Exception] = InvalidPayload) -> tuple[str, ...]:
    """``retry_on`` given to an enqueue as qualified names: exception classes, or their names
    (``"builtins.TimeoutError"``, ``"TimeoutError"`` for a built-in, ``"mymod.Flaky"``)."""
    if isinstance(value, str | type) or not isinstance(value, Sequence | frozenset | set):
        value = (value,)
    if len(value) > POLICY_LIST_MAX:
        raise error(f"retry_on names at most {POLICY_LIST_MAX} exception classes, not {len(value):,}")
    names = [_exception_name(v) for v in value]
    for given, name in zip(value, names, strict=True):
        if name is None:
            raise error(f"retry_on must name exception classes (e.g. 'builtins.TimeoutError'), not {given!r:.60}")
    return tuple(sorted({n for n in names if n is not None}))


def raised_is_named(exc: BaseException, names: Sequence[str]) -> bool:
    """Whether ``exc``'s class or one of its bases has one of ``names`` (nothing is imported)."""
    wanted = set(names)
    return any(exception_name(c) in wanted for c in type(exc).__mro__)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPolicy:
    """A task's retry policy (``@jobq.task(name, max_attempts=..., ...)``); None: the settings'.

    Applied by the worker that runs the task to each job whose enqueue did not set the field
    (see the module's docstring); a producer where the task is registered also stores
    ``max_attempts`` and ``timeout`` on the job, as what shows until a worker runs it."""

    max_attempts: int | None = None
    backoff: Backoff | None = None
    retry_on: tuple[type[BaseException], ...] | None = None
    """Exceptions that are retried; any other fails the job at once. None: every exception."""
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise ConfigError("max_attempts must be an integer >= 1")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout <= DURATION_MAX_SECONDS
        ):
            raise ConfigError("timeout must be a number of seconds above 0 and at most 100 years")
        if self.retry_on is not None and not (
            isinstance(self.retry_on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on)
        ):
            raise ConfigError("retry_on must be a tuple of exception classes")
        b = self.backoff
        if b is not None and not callable(b):
            try:
                object.__setattr__(self, "backoff", backoff_spec(b, ConfigError))
            except ConfigError:
                raise ConfigError(f"backoff must be {_BACKOFF_HELP}, or a function of the attempt number") from None

    def retries(self, exc: BaseException) -> bool:
        """Whether a handler that raised ``exc`` may be retried (attempts permitting)."""
        return self.retry_on is None or isinstance(exc, self.retry_on)

    def delay(self, attempt: int) -> float | None:
        """Seconds before the retry after failed ``attempt``; None: the queue's own backoff."""
        if self.backoff is None:
            return None
        seconds = float(self.backoff(attempt) if callable(self.backoff) else spec_delay(self.backoff, attempt))
        # A function's delay past 100 years is 100 years (a retry the queue can record).
        return min(seconds, DURATION_MAX_SECONDS) if 0 <= seconds < math.inf else None


@dataclasses.dataclass(frozen=True, slots=True)
class JobPolicy:
    """The retry policy one enqueue set (``enqueue(backoff=, retry_on=, max_attempts=, timeout=)``),
    stored on the job as JSON of only the fields given: a field left None is "the task's default"
    (then the settings'). ``retry_on`` holds exception names, so nothing is imported or unpickled."""

    max_attempts: int | None = None
    timeout: float | None = None
    backoff: BackoffSpec | None = None
    retry_on: tuple[str, ...] | None = None

    def to_json(self) -> str | None:
        """The stored form; None when the enqueue set nothing (the column stays NULL)."""
        fields = {f: getattr(self, f) for f in self.__slots__ if getattr(self, f) is not None}
        if "retry_on" in fields:
            fields["retry_on"] = list(fields["retry_on"])
        return json.dumps(fields, separators=(",", ":"), sort_keys=True) if fields else None

    @classmethod
    def from_json(cls, text: str | None) -> JobPolicy | None:
        """The policy stored on a job; None for none. Raises InvalidPayload for a row that jobq
        did not write (the worker then keeps to the task's and the queue's policy, and says so)."""
        if text is None:
            return None
        try:
            data: Any = json.loads(text)
        except ValueError:
            raise InvalidPayload("the job's policy is not JSON") from None
        if not isinstance(data, dict) or not set(data) <= {"max_attempts", "timeout", "backoff", "retry_on"}:
            raise InvalidPayload(f"the job's policy is not a policy: {text:.60}")
        attempts, timeout = data.get("max_attempts"), data.get("timeout")
        if attempts is not None and (type(attempts) is not int or attempts < 1):
            raise InvalidPayload(f"the job's policy has max_attempts {attempts!r:.20}")
        if timeout is not None and (_seconds(timeout) is None or timeout == 0):
            raise InvalidPayload(f"the job's policy has timeout {timeout!r:.20}")
        return cls(
            max_attempts=attempts,
            timeout=None if timeout is None else float(timeout),
            backoff=None if data.get("backoff") is None else backoff_spec(data["backoff"]),
            retry_on=None if data.get("retry_on") is None else retry_on_names(data["retry_on"]),
        )


#: Policies of the tasks registered with ``@jobq.task`` in this process, by task name.
POLICIES: dict[str, TaskPolicy] = {}


def stored_policy(job: Job) -> JobPolicy | None:
    """The policy the job's enqueue set; None for none, or for one that cannot be read (logged)."""
    return _given(job.id, job.policy)


def _given(job_id: int, text: str | None) -> JobPolicy | None:
    try:
        return JobPolicy.from_json(text)
    except InvalidPayload as exc:
        log.warning("job %s: %s; using the task's and the queue's policy", job_id, exc)
        return None


def max_attempts_for(task: str, policy: str | None, stored: int) -> int:
    """A job's max_attempts by the precedence, from its stored columns (for the rescuer, which
    reads no whole job): the enqueue's, the task's as registered here, else ``stored``."""
    given = _given(0, policy) if policy is not None else None
    if given is not None and given.max_attempts is not None:
        return given.max_attempts
    registered = POLICIES.get(task)
    if registered is not None and registered.max_attempts is not None:
        return registered.max_attempts
    return stored


def with_task_defaults(job: Job) -> Job:
    """The job as a worker runs it: ``max_attempts`` and ``timeout`` by the precedence (the
    enqueue's, the task's as registered here, then what the row holds: the settings' default)."""
    task = POLICIES.get(job.task)
    given = stored_policy(job) if job.policy is not None else None
    if task is None and given is None:
        return job
    attempts, timeout = job.max_attempts, job.timeout
    if given is not None and given.max_attempts is not None:
        attempts = given.max_attempts
    elif task is not None and task.max_attempts is not None:
        attempts = task.max_attempts
    if given is not None and given.timeout is not None:
        timeout = given.timeout
    elif task is not None and task.timeout is not None:
        timeout = task.timeout
    if attempts == job.max_attempts and timeout == job.timeout:
        return job
    return dataclasses.replace(job, max_attempts=attempts, timeout=timeout)


def on_failure(job: Job, exc: BaseException) -> tuple[bool, float | None]:
    """After the handler of ``job`` raised ``exc``: whether it may be retried (attempts
    permitting), and the delay before that retry (None: the queue's backoff). Enqueue first, then
    the task's ``retry_on``/``backoff``."""
    task = POLICIES.get(job.task)
    given = stored_policy(job) if job.policy is not None else None
    if given is not None and given.retry_on is not None:
        retried = raised_is_named(exc, given.retry_on)
    else:
        retried = task is None or task.retries(exc)
    if not retried:
        return False, None
    if given is not None and given.backoff is not None:
        return True, spec_delay(given.backoff, job.attempts)
    if task is None:
        return True, None
    try:
        return True, task.delay(job.attempts)
    except Exception as bad:  # noqa: BLE001 - a broken backoff function must not stop the worker
        log.error("task %r: its backoff function raised (%s); using the queue's backoff", job.task, bad)
        return True, None
