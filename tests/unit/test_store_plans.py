"""Every ``SqlStore`` method returns its plan's run as it is (``store.Plan``), so the asyncio store
(``AsyncPostgresStore``, whose ``_run_plan`` returns a coroutine) needs no twin of any method.

A method that looked at a transaction's result itself (``jobs += self._write(...)``), ran one
without returning it (``self._write(...)`` in a ``-> None`` method) or answered an empty batch
with a plain value would hand the asyncio caller an un-awaited coroutine or a wrong value: here it
fails for every method of the Backend Protocol. The plans' values through the real asyncio driver
on PostgreSQL: tests/integration/test_async_store.py."""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest

from jobq.backends import base, ops
from jobq.backends.base import ActionResult
from jobq.backends.postgres.aio import AsyncPostgresStore
from jobq.backends.store import MakeOp, SqlStore, Work
from jobq.job import JobStatus

# Not run through a plan: the caller's own transaction (blocking stores only; the asyncio
# caller path is ``aenqueue_in``/``acomplete_in``), and what each backend does its own way (a
# backup copies pages; blockers are SQLite's stopped processes read from /proc).
NOT_PLANNED = {"enqueue_in", "complete_in", "listener", "finish_waiter", "close", "backup", "blockers"}


def protocol_methods() -> list[str]:
    return sorted(
        name
        for name, member in vars(base.Backend).items()
        if inspect.isfunction(member) and not name.startswith("_") and name not in NOT_PLANNED
    )


class _Ran:
    """What the recording store's ``_run_plan`` returns: a method must hand back this very object."""

    def __init__(self, work: Work[Any]) -> None:
        self.work = work


class _Recording(SqlStore):
    """A store whose driver runs nothing: it records each plan it is given."""

    url = "test://"
    single_host = False

    def __init__(self) -> None:
        self.dialect = mock.MagicMock()
        self.ran: list[_Ran] = []

    def _run_plan(self, work: Work[Any]) -> Any:
        ran = _Ran(work)
        self.ran.append(ran)
        return ran

    def _transaction(self, make: MakeOp[Any], *, write: bool, on_unknown: MakeOp[Any] | None = None) -> Any:
        raise AssertionError("a method ran a transaction outside its plan")


def _dummy_args(func: Callable[..., Any]) -> list[Any]:
    params = list(inspect.signature(func).parameters.values())[1:]  # without self
    return [mock.MagicMock(name=p.name) for p in params if p.default is inspect.Parameter.empty]


@pytest.mark.parametrize("empty", [False, True], ids=["args", "empty"])
@pytest.mark.parametrize("name", protocol_methods())
def test_every_method_returns_its_plans_run_untouched(name: str, empty: bool) -> None:
    store = _Recording()
    args = _dummy_args(getattr(SqlStore, name))
    if empty:  # the shortcuts (no jobs, no leases, no waiter): still one plan, run
        args = [[] if isinstance(a, mock.MagicMock) else a for a in args]
        if name == "unregister_waiter":
            args = [None]
        if name == "register_waiter":
            store.dialect.sql = {}
    result = getattr(store, name)(*args)
    assert len(store.ran) == 1, f"{name} ran {len(store.ran)} plans"
    assert result is store.ran[0], f"SqlStore.{name} does not return its plan's run as it is: {result!r}"
    work = store.ran[0].work
    if isinstance(work, tuple):  # one transaction: (make, write, on_unknown), make building an ops generator
        make, write, on_unknown = work
        assert inspect.isgenerator(make()) and isinstance(write, bool)
        assert on_unknown is None or inspect.isgenerator(on_unknown())
    else:
        assert inspect.isgenerator(work)


def test_the_protocol_list_covers_the_store() -> None:
    # A method added to the Protocol is checked above without being listed; this guards the list itself.
    assert {"claim", "rescue_expired", "register_worker", "enqueue", "unregister_waiter"} <= set(protocol_methods())


# -- both drivers run a plan alike ---------------------------------------------------------------


def _answers(*values: Any) -> Iterator[Any]:
    yield from copy.deepcopy(values)  # fresh lists each run: a plan may extend what it was sent


class _Scripted(SqlStore):
    """The blocking driver, each transaction answered from a script (recording what it was asked)."""

    def __init__(self, answers: Iterator[Any]) -> None:
        self.dialect = mock.MagicMock()
        self.answers = answers
        self.asked: list[bool] = []

    def _transaction(self, make: MakeOp[Any], *, write: bool, on_unknown: MakeOp[Any] | None = None) -> Any:
        self.asked.append(write)
        return next(self.answers)


def _async_scripted(answers: Iterator[Any]) -> tuple[AsyncPostgresStore, list[bool]]:
    store = AsyncPostgresStore.__new__(AsyncPostgresStore)  # no pool: _arun is the script
    store.dialect = mock.MagicMock()
    asked: list[bool] = []

    async def arun(make: MakeOp[Any], *, write: bool, on_unknown: MakeOp[Any] | None = None) -> Any:
        asked.append(write)
        await asyncio.sleep(0)
        return next(answers)

    store._arun = arun  # type: ignore[method-assign]
    return store, asked


def _claimed(*jobs: Any) -> ops.Claimed:
    """A claim's transaction's answer: its jobs as ``ops.Claimed``, built by the plan after it."""
    return ops.Claimed([], list(jobs))


CASES: list[tuple[str, tuple[Any, ...], tuple[Any, ...], Any, list[bool]]] = [
    # name, args, transaction answers, expected result, transactions asked (write?)
    (
        "claim",
        ("w", ["a"], 3, 30.0, lambda: 0.0),
        ((_claimed("j1"), True), ["j2"]),
        ["j1", "j2"],
        [True, True],
    ),
    ("claim", ("w", ["a"], 1, 30.0, lambda: 0.0), ((_claimed("j1"), True),), ["j1"], [True]),
    ("claim", ("w", ["a"], 3, 30.0, lambda: 0.0), ((_claimed("j1"), False),), ["j1"], [True]),
    ("rescue_expired", (lambda: 0.0, lambda n: 1.0, "r"), (False,), [], [False]),
    ("rescue_expired", (lambda: 0.0, lambda n: 1.0, "r"), (True, ["moved"]), ["moved"], [False, True]),
    ("enqueue", ([], 0.0), (), [], []),
    ("register_worker", (mock.MagicMock(),), (None,), None, [True]),
]


@pytest.mark.parametrize(("name", "args", "answers", "expected", "asked"), CASES)
def test_the_blocking_and_the_asyncio_driver_run_a_plan_alike(
    name: str, args: tuple[Any, ...], answers: tuple[Any, ...], expected: Any, asked: list[bool]
) -> None:
    blocking = _Scripted(_answers(*answers))
    assert getattr(blocking, name)(*args) == expected
    assert blocking.asked == asked

    store, async_asked = _async_scripted(_answers(*answers))
    pending = getattr(store, name)(*args)
    assert inspect.iscoroutine(pending)
    assert asyncio.run(pending) == expected
    assert async_asked == asked


def test_a_plan_yields_transactions() -> None:
    store = _Recording()
    store.claim("w", ["a"], 1, 30.0, lambda: 0.0)
    plan = store.ran[0].work
    assert inspect.isgenerator(plan)
    make, write, on_unknown = next(plan)
    assert write and on_unknown is not None
    assert inspect.isgenerator(make()) and inspect.isgenerator(on_unknown())


def test_a_purge_runs_a_transaction_per_chunk_until_one_comes_back_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """``purge``: one write transaction per ``PURGE_CHUNK_JOBS`` jobs, the total of them all, and on
    SQLite (``chunk_pause_share``) a pause after each full chunk, as long a share of its time, in
    which other writers take the lock; PostgreSQL's row locks need none."""
    monkeypatch.setattr(base, "PURGE_CHUNK_JOBS", 2)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    blocking = _Scripted(_answers([1, 2], [3, 4], [5]))  # each chunk's ids deleted
    blocking.dialect.chunk_pause_share = 0.5
    assert blocking.purge([JobStatus.COMPLETED], 10.0) == 5
    assert blocking.asked == [True, True, True]
    assert len(slept) == 2 and all(s >= 0 for s in slept)  # after each full chunk, none after the last
    store, asked = _async_scripted(_answers([1, 2], [3, 4], []))
    store.dialect.chunk_pause_share = 0.0
    assert asyncio.run(store.purge([JobStatus.COMPLETED], 10.0)) == 4
    assert asked == [True, True, True] and len(slept) == 2


def test_an_operator_action_runs_a_transaction_per_chunk_until_none_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """``resubmit``/``cancel``: one write transaction per chunk of jobs, each starting after the
    last id of the one before, the results of all of them in order; on SQLite a pause between."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    r1, r2, r3 = (ActionResult(i, True, JobStatus.CANCELLED, "cancelled") for i in (1, 2, 7))
    blocking = _Scripted(_answers(([r1, r2], 7), ([r3], None)))
    blocking.dialect.chunk_pause_share = 1.0
    assert blocking.cancel(mock.MagicMock(), "ops", 1.0) == [r1, r2, r3]
    assert blocking.asked == [True, True] and len(slept) == 1
    store, asked = _async_scripted(_answers(([r1], 3), ([], None)))
    store.dialect.chunk_pause_share = 0.0
    assert asyncio.run(store.resubmit(mock.MagicMock(), "ops", 1.0)) == [r1]
    assert asked == [True, True] and len(slept) == 1


def test_a_chunked_write_that_fails_after_some_chunks_says_so_and_keeps_its_errors_class() -> None:
    """The chunks before committed: the message counts them, and an ``OutcomeUnknown`` (a chunk
    whose settling failed too) stays one, so that a caller catching it still does."""
    from jobq.backends.store import _after_chunks
    from jobq.errors import OutcomeUnknown, StorageError

    unknown = _after_chunks(OutcomeUnknown("lost"), 20, "acted on")
    assert isinstance(unknown, OutcomeUnknown)
    assert str(unknown).startswith("lost (20 jobs were acted on in the chunks before, which committed")
    plain = _after_chunks(StorageError("locked"), 1, "purged")
    assert type(plain) is StorageError and "1 job was purged" in str(plain)
