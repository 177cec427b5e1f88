"""Runs the contract suite on ``jobq.AsyncQueue``: a blocking view whose methods are the
``AsyncQueue``'s coroutines, each run to its end on the view's own event loop.

The loop runs in a thread of its own for the view's lifetime (as an application's loop does):
the ``AsyncQueue``'s asyncio pool and LISTEN connection (PostgreSQL) live on it, and calls from
several test threads at once are coroutines on that one loop, as concurrent requests would be.

Methods ``AsyncQueue`` defines go through it (its ``conn=``, its ``wait`` on the loop); what it
does not define (the worker's internals the suite also calls, such as ``rescue_expired``) falls
through to the blocking ``Queue`` underneath, which is what ``AsyncQueue`` itself builds on.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from jobq.async_queue import AsyncQueue


class BlockingAsyncQueue:
    """``AsyncQueue`` behind the blocking ``Queue`` interface, for the contract suite."""

    def __init__(self, aq: AsyncQueue) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="jobq-contract-loop", daemon=True)
        thread.start()
        object.__setattr__(self, "aq", aq)
        object.__setattr__(self, "loop", loop)
        object.__setattr__(self, "_thread", thread)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.aq.sync, name, value)  # e.g. a test's own clock: the facade underneath uses it

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __getattr__(self, name: str) -> Any:
        method = getattr(type(self.aq), name, None)
        if method is not None and inspect.iscoroutinefunction(method):
            bound: Callable[..., Any] = getattr(self.aq, name)

            def run(*args: Any, **kwargs: Any) -> Any:
                return self._run(bound(*args, **kwargs))

            return run
        return getattr(self.aq.sync, name)

    def __enter__(self) -> BlockingAsyncQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self._run(self.aq.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
