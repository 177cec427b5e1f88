"""Handlers by name: the ``@task`` decorator and dotted paths (``package.module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobq.errors import ConfigError

if TYPE_CHECKING:
    from jobq.worker.context import JobContext

Handler = Callable[["JobContext"], Any]

#: Handlers registered with ``@task``; ``jobq worker --import MODULE`` fills it by importing.
REGISTRY: dict[str, Handler] = {}


def task(name: str | None = None) -> Callable[[Handler], Handler]:
    """Register a handler under ``name`` (default: the function's name).

    >>> @task("resize")
    ... def resize(ctx): ...
    """

    def register(func: Handler) -> Handler:
        REGISTRY[name if name is not None else func.__name__] = func
        return func

    return register


def load_handler(spec: str) -> Handler:
    """Import ``package.module:function`` and return the function (ConfigError if impossible)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"handler {spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import handler module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"handler {spec!r}: {module_name} has no {attr!r}")
    if not callable(target):
        raise ConfigError(f"handler {spec!r} is not callable")
    return target  # type: ignore[no-any-return]
