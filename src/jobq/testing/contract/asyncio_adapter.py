"""Runs the contract suite on ``jobq.AsyncQueue``: a blocking view whose methods are the
``AsyncQueue``'s coroutines, each run to its end on an event loop of its own.

Methods ``AsyncQueue`` defines go through it (its ``conn=``, its ``wait`` on the loop); what it
does not define (the worker's internals the suite also calls, such as ``rescue_expired``) falls
through to the blocking ``Queue`` underneath, which is what ``AsyncQueue`` itself builds on.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from jobq.async_queue import AsyncQueue


class BlockingAsyncQueue:
    """``AsyncQueue`` behind the blocking ``Queue`` interface, for the contract suite."""

    def __init__(self, aq: AsyncQueue) -> None:
        object.__setattr__(self, "aq", aq)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.aq.sync, name, value)  # e.g. a test's own clock: the facade underneath uses it

    def __getattr__(self, name: str) -> Any:
        method = getattr(type(self.aq), name, None)
        if method is not None and inspect.iscoroutinefunction(method):
            bound: Callable[..., Any] = getattr(self.aq, name)

            def run(*args: Any, **kwargs: Any) -> Any:
                # asyncio.run: a loop per call, so calls from several threads never share one.
                return asyncio.run(bound(*args, **kwargs))

            return run
        return getattr(self.aq.sync, name)

    def __enter__(self) -> BlockingAsyncQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        asyncio.run(self.aq.aclose())
