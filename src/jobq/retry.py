"""Retry backoff: exponential with jitter, capped."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

from jobq.config import BACKOFF_BASE_SECONDS_DEFAULT, BACKOFF_CAP_SECONDS_DEFAULT
from jobq.errors import ConfigError


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
    nominal = min(cap, base * 2.0 ** max(0, attempt - 1))
    draw = rng.random() if rng is not None else random.random()
    return nominal * (0.5 + 0.5 * draw)


Backoff = float | Callable[[int], float]
"""A task's retry delay: constant seconds, or a function of the failed attempt (1-based)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPolicy:
    """A task's retry policy (``@jobq.task(name, max_attempts=..., ...)``); None: the settings'.

    ``max_attempts`` and ``timeout`` are stored on each job when it is enqueued (a value given to
    ``enqueue`` wins), so they apply where the task is registered in the producing process;
    ``backoff`` and ``retry_on`` are applied by the worker that runs the handler."""

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
        if self.timeout is not None and (not isinstance(self.timeout, int | float) or not 0 < self.timeout < math.inf):
            raise ConfigError("timeout must be a positive number of seconds")
        if self.retry_on is not None and not (
            isinstance(self.retry_on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on)
        ):
            raise ConfigError("retry_on must be a tuple of exception classes")
        b = self.backoff
        if b is not None and not callable(b) and (not isinstance(b, int | float) or not 0 <= b < math.inf):
            raise ConfigError("backoff must be seconds >= 0 or a function of the attempt number")

    def retries(self, exc: BaseException) -> bool:
        """Whether a handler that raised ``exc`` may be retried (attempts permitting)."""
        return self.retry_on is None or isinstance(exc, self.retry_on)

    def delay(self, attempt: int) -> float | None:
        """Seconds before the retry after failed ``attempt``; None: the queue's own backoff."""
        if self.backoff is None:
            return None
        seconds = float(self.backoff(attempt) if callable(self.backoff) else self.backoff)
        return seconds if 0 <= seconds < math.inf else None


#: Policies of the tasks registered with ``@jobq.task`` in this process, by task name.
POLICIES: dict[str, TaskPolicy] = {}
