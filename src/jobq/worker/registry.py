"""Handlers by name: the ``@task`` decorator and dotted paths (``package.module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobq.errors import ConfigError
from jobq.retry import POLICIES, Backoff, TaskPolicy

if TYPE_CHECKING:
    from jobq.worker.context import JobContext

Handler = Callable[["JobContext"], Any]

#: Handlers registered with ``@task``; ``jobq worker --import MODULE`` fills it by importing.
REGISTRY: dict[str, Handler] = {}


def task(
    name: str | None = None,
    *,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    timeout: float | None = None,
) -> Callable[[Handler], Handler]:
    """Register a handler under ``name`` (default: the function's name), with its retry policy.

    Args:
        max_attempts, timeout: the task's defaults, stored on each job enqueued for it in a
            process where it is registered (``enqueue(max_attempts=..., timeout=...)`` wins).
        backoff: seconds before a retry, or a function of the failed attempt (1-based) giving
            them (default: the queue's exponential backoff).
        retry_on: the exceptions that are retried; any other fails the job at once.

    Raises ConfigError for a bad value.

    >>> @task("resize", max_attempts=5, backoff=10, retry_on=(TimeoutError,), timeout=60)
    ... def resize(ctx): ...
    """
    policy = TaskPolicy(max_attempts=max_attempts, backoff=backoff, retry_on=retry_on, timeout=timeout)

    def register(func: Handler) -> Handler:
        task_name = name if name is not None else func.__name__
        REGISTRY[task_name] = func
        POLICIES[task_name] = policy
        return func

    return register


def load_handler(spec: str) -> Handler:
    """Import ``package.module:function`` and return the function (ConfigError if impossible)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"handler {spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError) as exc:  # TypeError: a relative name, '..mod:f'
        raise ConfigError(f"cannot import handler module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"handler {spec!r}: {module_name} has no {attr!r}")
    if not callable(target):
        raise ConfigError(f"handler {spec!r} is not callable")
    return target  # type: ignore[no-any-return]
