"""What the per-job API costs in Python, counted (issue 13): a regression fails `make test`.

On SQLite a per-job claim+complete runs as many statements as the minimal transactions
(test_sqlite_costs.py); what is left between jobq and raw SQLite is Python: ~80 us of user CPU per
claimed+completed job against ~35 us for the same six statements sent straight to apsw, measured
with ``resource.getrusage`` on a real file. Timings on a shared machine are noise; the number of
Python function calls (``sys.setprofile`` 'call' events, generator resumptions included) is not,
and it moves with the CPU: each call is a frame, its arguments and whatever it builds.

Measured on a real SQLite file: a claim+complete made 70 calls before issue 13's hot-path work
(the claim's queue list rendered on every call, the completion's group bookkeeping for one job,
three calls for the nonce, json.loads's wrapper calls, the batch calls' lists, a call of the
driver per statement), 49 after; an enqueue 39 (a second generator around the one-job insert,
the batch checks), then 28. In instructions (callgrind, synchronous=OFF): 596k -> 525k per
claim+complete, 279k -> 265k per enqueue, against 389k and 195k for the same statements sent
straight to apsw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_metrics_costs import python_calls

import jobq
from jobq.observability import tracing

# Every test here counts what each call makes, without the once-a-second refreshes (conftest.py).
pytestmark = pytest.mark.usefixtures("no_periodic_refresh")

#: Python calls of one ``claim``, then of one ``complete``, through the facade, the test's own
#: lambda included: measured 26 and 13 (41 and 31 before issue 13's hot-path work; 33 and 20
#: before SQLite ran their statements without the plan driver and the op generators).
CLAIM_CALLS_MAX = 27
COMPLETE_CALLS_MAX = 14
#: Python calls of one ``enqueue`` of a small payload, the lambda included: measured 18 (40 before
#: issue 13, 26 before SQLite's one-job insert ran without the op generator and the payload was
#: encoded without JSONEncoder.encode's two frames).
ENQUEUE_CALLS_MAX = 20
ROUNDS = 5
#: Python calls a PostgreSQL claim+complete makes beyond psycopg's own for the same two statements
#: sent with ``conn.execute`` on a plain connection (the test's lambdas included): measured 72, then
#: 79 (2026-12-04), 74 with the backend's sticky connection (no getconn/putconn per call), 67 with
#: the refusal detail formatted without json.dumps and the pool and connection status read directly,
#: 54 with the per-job claim and completion sent without the plan and the operations' generators
#: (2026-12-06), 56 the same day; then -21 with the two statements sent without a cursor
#: (``PooledConnection.run_alone``: 81 calls in all against the cursor path's 107 for the bare
#: statements), -19 with its protocol steps shared with the async store (``_alone_steps``, a
#: generator resumed once per round trip). Below zero: jobq's whole call now costs fewer calls
#: than psycopg's cursor alone.
PG_ADDED_CALLS_MAX = -16
#: The same for one ``enqueue`` of one job without a key (see its test): 16, then -14 without the
#: cursor, -12 with the steps shared with the async store.
PG_ENQUEUE_ADDED_CALLS_MAX = -10


@pytest.fixture(autouse=True)
def no_tracing_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the calls as in a process without an OpenTelemetry SDK (one call, like the real
    check's when none is set up): test_tracing sets one up for the rest of the test process, and
    a traced enqueue makes more calls (its span)."""
    monkeypatch.setattr(tracing, "recording", lambda: False)


def payload(n: int) -> dict[str, object]:
    return {"n": n, "path": f"data/files/job-{n:07d}.txt", "pad": "x" * 60}


def claims_counted(q: jobq.Queue) -> tuple[list[int], list[int]]:
    """Python calls of ``ROUNDS`` claims and of their completions, after two to warm up (the
    schema read, the statements rendered and prepared)."""
    q.enqueue_many([payload(n) for n in range(2 + ROUNDS)])
    for _ in range(2):
        job = q.claim("w")
        assert job is not None
        q.complete(job)
    claim_calls, complete_calls, claimed = [], [], []
    for _ in range(ROUNDS):
        claim_calls.append(python_calls(lambda: claimed.append(q.claim("w"))))
        job = claimed[-1]
        assert job is not None and job.payload["pad"] == "x" * 60
        complete_calls.append(python_calls(lambda: q.complete(job)))  # noqa: B023 - called at once
    # The calls counted did the work: each job handed out once, every one completed.
    assert len({j.id for j in claimed if j is not None}) == ROUNDS
    assert q.counts()["COMPLETED"] == 2 + ROUNDS
    return claim_calls, complete_calls


def test_a_per_job_claim_and_completion_make_a_bounded_number_of_python_calls(tmp_path: Path) -> None:
    with jobq.Queue(f"sqlite:///{tmp_path / 'q.db'}") as q:
        claim_calls, complete_calls = claims_counted(q)
    assert max(claim_calls) <= CLAIM_CALLS_MAX, (claim_calls, complete_calls)
    assert max(complete_calls) <= COMPLETE_CALLS_MAX, complete_calls


def test_an_enqueue_makes_a_bounded_number_of_python_calls(tmp_path: Path) -> None:
    payloads = [payload(n) for n in range(1 + ROUNDS)]
    with jobq.Queue(f"sqlite:///{tmp_path / 'q.db'}") as q:
        q.enqueue(payloads[0])  # warm
        calls = [python_calls(lambda: q.enqueue(p)) for p in payloads[1:]]  # noqa: B023 - called at once
        assert q.counts()["PENDING"] == 1 + ROUNDS
    assert max(calls) <= ENQUEUE_CALLS_MAX, calls


@pytest.mark.postgres
def test_a_postgres_claim_and_completion_cost_little_python_beyond_psycopg_s_own(postgres_url: str) -> None:
    """On PostgreSQL each call is one statement; what jobq adds around psycopg's execute of it (the
    pool's checkout, the driver, the ``Job``) is counted against psycopg's own calls for the very
    statements sent on a plain connection, so that a psycopg upgrade does not move the bound.
    Measured 2026-12-01 with cProfile (builtins included): a claim+complete made 342 calls, raw
    psycopg 139; one cursor per pooled connection instead of one per statement saved 55 of them,
    ``getconn``/``putconn`` instead of ``pool.connection()``'s context managers 38."""
    with jobq.Queue(postgres_url) as q:
        claim_calls, complete_calls = claims_counted(q)
        q.enqueue(payload(0))

        def claim_and_complete() -> None:
            job = q.claim("w")
            assert job is not None
            q.complete(job)

        sent = _statements_sent(claim_and_complete)
    assert len(sent) == 2  # the claim's statement and the completion's
    floor = _psycopg_floor(postgres_url, sent)
    added = max(claim_calls) + max(complete_calls) - floor
    assert added <= PG_ADDED_CALLS_MAX, (claim_calls, complete_calls, floor)


@pytest.mark.postgres
def test_a_postgres_enqueue_costs_little_python_beyond_psycopg_s_own(postgres_url: str) -> None:
    """As the claim and completion above, for ``enqueue`` of one job without a key: measured 2026-12-06,
    the calls beyond psycopg's own for the same statement were 16 after the statement was sent as it
    is (without the plan and the operation's generator: 28 before)."""
    payloads = [payload(n) for n in range(2 + ROUNDS)]
    with jobq.Queue(postgres_url) as q:
        for p in payloads[:2]:
            q.enqueue(p)  # warm: the statement rendered and prepared
        calls = [python_calls(lambda: q.enqueue(p)) for p in payloads[2:]]  # noqa: B023 - called at once
        assert q.counts()["PENDING"] == 2 + ROUNDS
        sent = _statements_sent(lambda: q.enqueue(payload(99)))
    assert len(sent) == 1  # one statement
    floor = _psycopg_floor(postgres_url, sent)
    added = max(calls) - floor
    assert added <= PG_ENQUEUE_ADDED_CALLS_MAX, (calls, floor)


def _statements_sent(call: Callable[[], object]) -> list[tuple[str, object]]:
    """The statements and parameters jobq sends during ``call()``: through its cursors, and alone
    without one (``PooledConnection.run_alone``, the per-job API's)."""
    import psycopg

    from jobq.backends.postgres import PooledConnection

    sent: list[tuple[str, object]] = []
    real = psycopg.Cursor.execute
    real_alone = PooledConnection.run_alone

    def capture(self: psycopg.Cursor[object], query: str, params: object = None, **kw: object) -> object:
        sent.append((query, params))
        return real(self, query, params, **kw)  # type: ignore[arg-type]

    def capture_alone(self: PooledConnection, query: str, params: object, attempt: object) -> object:
        sent.append((query, params))
        return real_alone(self, query, params, attempt)  # type: ignore[arg-type]

    psycopg.Cursor.execute = capture  # type: ignore[method-assign]
    PooledConnection.run_alone = capture_alone  # type: ignore[method-assign]
    try:
        call()
    finally:
        psycopg.Cursor.execute = real  # type: ignore[method-assign]
        PooledConnection.run_alone = real_alone  # type: ignore[method-assign]
    return sent


def _psycopg_floor(url: str, statements: list[tuple[str, object]]) -> int:
    """Python calls of ``statements`` run straight through psycopg on a plain connection, each
    prepared first as jobq's are (after 5 runs): what any client pays for them."""
    from pg import raw_connect

    with raw_connect(url, autocommit=True) as conn:
        for _ in range(6):
            for query, params in statements:
                conn.execute(query, params).fetchall()
        return sum(python_calls(lambda q=q, p=p: conn.execute(q, p).fetchall()) for q, p in statements)
