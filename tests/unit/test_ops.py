"""The storage operations' rules without a database: an operation is a generator of commands.

A fake runner answers each statement by name, as a scripted database would; the same operation
runs unchanged under the blocking runner (``drive``) and the asyncio one (``adrive``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from jobq.backends import ops
from jobq.backends.base import Completion, Lease
from jobq.backends.sqlite import DIALECT
from jobq.job import JobStatus

NAMES = {text: name for name, text in DIALECT.sql.items()}


def scripted(answers: dict[str, Callable[[Any], ops.Rows]]) -> tuple[Callable[[ops.Command], ops.Rows], list[str]]:
    seen: list[str] = []

    def run(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Notify):
            seen.append("notify")
            return []
        name = NAMES.get(command.sql, command.sql)
        seen.append(name)
        return answers.get(name, lambda params: [])(command.params)

    return run, seen


def _completion(token: str = "t-1") -> Completion:
    return Completion(Lease(1, token, "w"), '{"ok":1}')


def test_a_fenced_completion_writes_no_event_unless_it_has_a_note() -> None:
    run, seen = scripted({"complete": lambda params: [(1, "t-1", 1)]})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, False), run) == [True]
    # The row records the completion (issue 13); whoever waits for the job (Queue.wait) is told
    # once it commits.
    assert seen == ["complete", "notify"]
    run, seen = scripted({"complete": lambda params: [(1, "t-1", 1)]})
    noted = Completion(Lease(1, "t-1", "w"), None, "a cancel came too late")
    assert ops.drive(ops.complete(DIALECT, [noted], lambda: 100.0, False), run) == [True]
    assert seen == ["complete", "insert_event", "notify"]


def test_a_group_completion_is_one_statement_fenced_per_row_and_refuses_the_stale_items() -> None:
    """SQLite completes a group in one set-based statement (issue 13), given each job's own id,
    token and result; the rows it returns are the leases that held, the others are refused."""
    sent: list[Any] = []

    def held(params: Any) -> ops.Rows:
        sent.append(params)
        return [(1, "t-1", 1), (3, "t-3", 2)]

    run, seen = scripted({"complete_set": held})
    items = [
        Completion(Lease(3, "t-3", "w"), None),
        Completion(Lease(2, "t-2", "w"), '"r2"'),
        Completion(Lease(1, "t-1", "w"), '{"ok":1}', "late"),
    ]
    assert ops.drive(ops.complete(DIALECT, items, lambda: 100.0, False), run) == [True, False, True]
    assert seen == ["complete_set", "insert_event", "insert_event", "notify"]  # the refusal, the note
    assert json.loads(sent[0]["items"]) == [[1, "t-1", '{"ok":1}'], [2, "t-2", '"r2"'], [3, "t-3", None]]
    assert sent[0]["now"] == 100.0


def built(result: tuple[object, ...]) -> tuple[object, ...]:
    """A claim operation's result with its jobs built (``Claimed.build``: the plan's step after
    the commit)."""
    return tuple(part.build() if isinstance(part, ops.Claimed) else part for part in result)


def test_a_claim_is_one_write_and_writes_no_event() -> None:
    run, seen = scripted({})
    assert built(ops.drive(ops.claim(DIALECT, "w", ["default"], 1, 30.0, lambda: 100.0, "n"), run)) == ([], False)
    # The claim itself (rendered with its queue list, passing over controlled queues); it took
    # nothing, so the queue's flow controls are read (none here), and nothing after that.
    statement, controls = seen
    assert statement.startswith("UPDATE jobs SET status = 'PROCESSING'"), statement
    assert "queue_controls" in statement  # the claim's own check: {uncontrolled}
    assert "queue_controls" in controls and controls.lstrip().startswith("SELECT"), controls


def test_a_claim_that_gets_what_it_asked_for_reads_no_controls() -> None:
    # The claim's {uncontrolled} already passed over paused and limited queues, under the lock.
    from jobq.backends.common import JOB_COLUMNS

    row = tuple(7 if column == "id" else None for column in JOB_COLUMNS)
    sent: list[str] = []

    def run(command: ops.Command) -> ops.Rows:
        assert isinstance(command, ops.Exec)
        sent.append(command.sql)
        return [row] if len(sent) == 1 else []

    claimed, controlled = ops.drive(ops.claim(DIALECT, "w", ["default"], 1, 30.0, lambda: 100.0, "n"), run)
    assert [j.id for j in claimed.build()] == [7] and not controlled
    assert len(sent) == 1 and sent[0].startswith("UPDATE jobs"), sent


def test_a_refused_single_completion_is_recorded_and_reported() -> None:
    # The one-completion path (the per-job API on SQLite) fences and refuses as a group does.
    run, seen = scripted({})
    assert ops.drive(ops.complete(DIALECT, [_completion("stale")], lambda: 100.0, False), run) == [False]
    assert seen == ["complete", "insert_event"]
    # A repeat whose first try had committed is recognised, not refused.
    run, seen = scripted({"lease_state": lambda params: [("COMPLETED", "t-1")]})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, True), run) == [True]
    assert seen == ["complete", "lease_state"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize("queues", [["default"], ["a", "b", "c"], []])
def test_a_statement_rendered_for_queues_is_the_one_rendered_each_time(dialect: str, queues: list[str]) -> None:
    # The claim's text and its queue parameters are kept per shape (Dialect.stmt_for_queues): the
    # same as rendering them anew, also on the second call, and never shared between shapes.
    from jobq.backends.postgres import DIALECT as PG

    d = DIALECT if dialect == "sqlite" else PG
    fragments = {"uncontrolled": d.sql["uncontrolled_one" if len(queues) == 1 else "uncontrolled_each"]}
    expected_params: dict[str, Any] = {}
    expected = d.stmt("claim", queues=d.any_of("queue", "q", queues, expected_params), **fragments)
    for _ in range(2):
        params: dict[str, Any] = {"now": 1.0}
        assert d.stmt_for_queues("claim", queues, params, **fragments) == expected
        assert params == {"now": 1.0, **expected_params}
    other: dict[str, Any] = {}
    d.stmt_for_queues("claim", [*queues, "z"], other, **fragments)
    assert other != expected_params


def test_queue_names_of_other_types_are_rendered_not_taken_from_the_cache() -> None:
    # 1 == True as dictionary keys: a cached shape must never hand one's parameters to the other.
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    DIALECT.stmt_for_queues("claim", [1], first, uncontrolled="TRUE")  # type: ignore[list-item]
    DIALECT.stmt_for_queues("claim", [True], second, uncontrolled="TRUE")  # type: ignore[list-item]
    assert type(first["q0"]) is int and second["q0"] is True


def test_finishing_writes_name_the_jobs_they_finished_and_only_those() -> None:
    notified: list[ops.Notify] = []

    def run(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Notify):
            notified.append(command)
            return []
        name = NAMES.get(command.sql, command.sql)
        return [(1, 1)] if name in ("retry", "fail") else []

    from jobq.backends.base import Failure

    retried = Failure(Lease(1, "t-1", "w"), "boom", retry_at=200.0)
    assert ops.drive(ops.fail(DIALECT, [retried], lambda: 100.0, False), run) == [JobStatus.PENDING]
    assert notified == [], "a retry is not the end of the job"
    failed = Failure(Lease(1, "t-1", "w"), "boom", retry_at=None)
    assert ops.drive(ops.fail(DIALECT, [failed], lambda: 100.0, False), run) == [JobStatus.FAILED]
    assert notified == [ops.Notify(frozenset(), frozenset({1}))]


def test_a_refused_completion_is_recorded_and_not_looked_up_unless_repeated() -> None:
    run, seen = scripted({"lease_state": lambda params: [("COMPLETED", "t-1")]})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, False), run) == [False]
    assert seen == ["complete", "insert_event"]  # the stale_write_refused event, no lookup


def test_a_repeat_recognises_its_own_committed_completion() -> None:
    run, seen = scripted({"lease_state": lambda params: [("COMPLETED", "t-1")]})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, True), run) == [True]
    assert seen == ["complete", "lease_state"]  # recognised: nothing recorded


def test_a_repeat_does_not_take_another_lease_for_its_own() -> None:
    run, seen = scripted({"lease_state": lambda params: [("COMPLETED", "t-2")]})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, True), run) == [False]
    assert seen == ["complete", "lease_state", "refusal_recorded", "insert_event"]


def test_a_repeat_refused_again_records_the_refusal_once() -> None:
    """A refused write repeated after its COMMIT's reply was lost: that commit recorded the
    refusal already (the same operation, job and lease in its detail), so none is inserted."""
    run, seen = scripted({"refusal_recorded": lambda params: [(1,)]})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, True), run) == [False]
    assert seen == ["complete", "lease_state", "refusal_recorded"]
    run, seen = scripted({"refusal_recorded": lambda params: [(1,)]})
    beat = ops.heartbeat(DIALECT, [Lease(1, "t-1", "w")], 30.0, lambda: 100.0, repeat=True)
    assert [r.alive for r in ops.drive(beat, run)] == [False]
    assert "insert_event" not in seen and "refusal_recorded" in seen


def test_a_first_refusal_is_recorded_without_a_read() -> None:
    run, seen = scripted({})
    assert ops.drive(ops.complete(DIALECT, [_completion()], lambda: 100.0, False), run) == [False]
    assert "refusal_recorded" not in seen and seen[-1] == "insert_event"


def test_the_same_operation_runs_under_asyncio() -> None:
    answers: dict[str, Callable[[Any], ops.Rows]] = {"counts": lambda params: [("PENDING", 3), ("FAILED", 1)]}
    run, _ = scripted(answers)

    async def arun(command: ops.Command) -> ops.Rows:
        await asyncio.sleep(0)
        return run(command)

    blocking = ops.drive(ops.counts(DIALECT), run)
    awaited = asyncio.run(ops.adrive(ops.counts(DIALECT), arun))
    assert blocking == awaited and awaited["PENDING"] == 3 and awaited["COMPLETED"] == 0


def test_claim_reads_the_clock_once_inside_the_operation() -> None:
    calls: list[float] = []

    def clock() -> float:
        calls.append(1.0)
        return 50.0

    run, seen = scripted({})
    op = ops.claim(DIALECT, "w", ["default"], 5, 30.0, clock, "nonce")
    assert calls == []  # building the operation reads nothing: the runner holds the lock first
    assert built(ops.drive(op, run)) == ([], False) and calls == [1.0]
    # The claim, rendered for one queue, then (it took nothing) the queue's flow controls.
    assert len(seen) == 2 and "lease_token = :nonce" in seen[0] and seen[1].lstrip().startswith("SELECT")


def _lease(token: str = "t-1") -> Lease:
    return Lease(1, token, "w")


def test_a_heartbeat_refused_after_its_own_leases_completion_is_not_recorded() -> None:
    """A heartbeat that waited for an application's commit (``ctx.complete(conn=...)``) finds the
    job completed with its own token: the lease is over, nothing stale happened."""
    run, seen = scripted({"lease_state": lambda params: [("COMPLETED", "t-1")]})
    results = ops.drive(ops.heartbeat(DIALECT, [_lease()], 30.0, lambda: 100.0), run)
    assert [r.alive for r in results] == [False]
    assert seen == ["heartbeat", "lease_state"]


def test_a_heartbeat_refused_for_another_lease_is_recorded() -> None:
    for state in [("COMPLETED", "t-2")], [("PROCESSING", "t-2")], [("PENDING", None)], []:
        run, seen = scripted({"lease_state": lambda params, state=state: state})
        results = ops.drive(ops.heartbeat(DIALECT, [_lease()], 30.0, lambda: 100.0), run)
        assert [r.alive for r in results] == [False]
        assert seen == ["heartbeat", "lease_state", "insert_event"], state


def test_a_combined_operation_sends_nothing_alone() -> None:
    # PostgreSQL runs a command marked `alone` as its own transaction (autocommit): inside
    # complete_and_claim's transaction (a repeat, or completions with notes) the completion's
    # one-statement form must join the claim's transaction.
    from jobq.backends.ops.flow import CONTROLLED_NONE
    from jobq.backends.postgres import dialect_for

    pg = dialect_for("jobq")
    assert "complete_one" in pg.sql  # the one-statement form this test is about exists
    sent: list[ops.Command] = []

    def run(command: ops.Command) -> ops.Rows:
        sent.append(command)
        return []

    noted = Completion(Lease(1, "t-1", "w"), '{"ok":1}', note="a note")
    op = ops.complete_and_claim(pg, [noted], lambda: 100.0, False, "w", ["default"], 1, 30.0, "n")
    assert built(ops.drive(op, run)) == ([False], [], CONTROLLED_NONE)
    assert len(sent) >= 2
    assert not any(isinstance(c, ops.Exec) and c.alone for c in sent)
    # ...while the completion on its own is one statement sent alone,
    sent.clear()
    ops.drive(ops.complete(pg, [_completion()], lambda: 100.0, False), run)
    assert [isinstance(c, ops.Exec) and c.alone for c in sent] == [True]
    # ...and so are plain completions with the next claim (complete_set_and_claim).
    sent.clear()
    op = ops.complete_and_claim(pg, [_completion()], lambda: 100.0, False, "w", ["default"], 1, 30.0, "n")
    assert built(ops.drive(op, run)) == ([False], [], CONTROLLED_NONE)
    assert [isinstance(c, ops.Exec) and c.alone for c in sent] == [True]


def test_one_plain_enqueue_on_postgres_is_one_statement_without_a_json_array() -> None:
    # issue 13: the usual enqueue binds its columns; enqueue_with_events' JSON array (parsed and
    # sorted by the server) cost ~100 us a call. A batch, and a delayed job, keep their forms.
    from jobq.backends.base import NewJob
    from jobq.backends.postgres import dialect_for

    pg = dialect_for("jobq")
    sent: list[ops.Command] = []

    def run(command: ops.Command) -> ops.Rows:
        sent.append(command)
        return [(len(sent),)]

    def job(run_at: float) -> NewJob:
        return NewJob('{"n":1}', "default", "", 0, run_at, 3)

    assert ops.drive(ops.enqueue(pg, [job(100.0)], 100.0), run) == [1]
    assert len(sent) == 1 and isinstance(sent[0], ops.Exec) and sent[0].alone
    assert sent[0].sql == pg.sql["enqueue_one"] and "json" not in sent[0].sql.lower()
    assert sent[0].params["due"] is True
    sent.clear()
    ops.drive(ops.enqueue(pg, [job(200.0)], 100.0), run)
    assert sent[0].sql == pg.sql["enqueue_one"] and sent[0].params["due"] is False  # no wake-up yet
    sent.clear()
    ops.drive(ops.enqueue(pg, [job(100.0), job(100.0)], 100.0), run)
    assert [c.sql for c in sent if isinstance(c, ops.Exec)] == [pg.sql["enqueue_uniform"]]


def test_a_postgres_batch_binds_what_its_jobs_share_once() -> None:
    # issue 13: enqueue_many's jobs differ only in their payloads: the shared columns are bound
    # once and the payloads sent as one JSON array of strings (enqueue_uniform). A batch whose
    # jobs differ in anything else keeps enqueue_with_events' array of rows.
    from jobq.backends.base import NewJob
    from jobq.backends.postgres import dialect_for

    pg = dialect_for("jobq")
    sent: list[ops.Command] = []

    def run(command: ops.Command) -> ops.Rows:
        sent.append(command)
        return [(3,), (1,), (2,)]

    same = [NewJob(f'{{"n":{i}}}', "q", "t", 5, 100.0, 7, 2.5, policy_json='{"x":1}') for i in range(3)]
    assert ops.drive(ops.enqueue(pg, same, 100.0), run) == [1, 2, 3]
    [command] = sent
    assert isinstance(command, ops.Exec) and command.alone and command.sql == pg.sql["enqueue_uniform"]
    assert json.loads(command.params["payloads"]) == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert {k: command.params[k] for k in ("queue", "task", "priority", "run_at", "max_attempts", "timeout")} == {
        "queue": "q", "task": "t", "priority": 5, "run_at": 100.0, "max_attempts": 7, "timeout": 2.5,
    }  # fmt: skip
    assert command.params["policy"] == '{"x":1}' and command.params["due"] is True
    for differs in (
        {"queue": "other"}, {"task": "other"}, {"priority": 1}, {"run_at": 200.0}, {"max_attempts": 1},
        {"timeout": None}, {"policy_json": None},
    ):  # fmt: skip
        sent.clear()
        mixed = [*same[:2], dataclasses.replace(same[2], **differs)]
        ops.drive(ops.enqueue(pg, mixed, 100.0), run)
        assert [c.sql for c in sent if isinstance(c, ops.Exec)] == [pg.sql["enqueue_with_events"]], differs


@pytest.mark.parametrize("token", ["n0nce-12", 'a "quoted"\\ token', "é\u2028\x00\n", "\ud800 lone surrogate"])
def test_a_refusal_detail_is_the_text_json_dumps_makes(token: str) -> None:
    # Formatted without json.dumps (issue 13), read back by the history and the metrics as JSON.
    from jobq.backends.ops.core import _refusal_detail

    lease = Lease(7, token, "w1")
    for op in ("complete", "heartbeat", "fail"):
        assert _refusal_detail(DIALECT, op, lease) == json.dumps({"operation": op, "token": token})
