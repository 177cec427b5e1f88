"""A jobq client frozen inside its own transaction (PostgreSQL): SIGSTOP, a paused VM, a debugger.

Its locks stay held while it is frozen. A claim of a concurrency-limited queue locks the queue's
control row, so every worker of every host waited for that lock, for as long as the client stayed
frozen. jobq's sessions now tell the server to end a session idle inside a transaction for
``IDLE_IN_TRANSACTION_TIMEOUT_MS``: the frozen transaction rolls back, the others go on, and the
frozen client, continued, settles its commit's unknown outcome (nothing committed).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from children import stopped
from pgbouncer import through_pgbouncer
from polling import wait_for
from processes import Procs

import jobq
from jobq.backends import ops
from jobq.backends.postgres import IDLE_IN_TRANSACTION_TIMEOUT_MS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.parametrize("via", ["direct", "pgbouncer"])
def test_a_client_frozen_inside_a_limited_claim_holds_the_queue_only_until_the_server_ends_it(
    postgres_url: str, procs: Procs, tmp_path: Path, request: pytest.FixtureRequest, via: str
) -> None:
    """Behind PgBouncer (``pooler=transaction``: no startup options), its own
    ``idle_transaction_timeout`` (tests/pgbouncer.py, as docs/multi-host.md sets it) does the same."""
    url = postgres_url
    if via == "pgbouncer":
        url = through_pgbouncer(request.getfixturevalue("pgbouncer_server"), postgres_url, listen=False)
    with jobq.Queue(url) as q:
        with q.backend._get_pool().connection() as conn:  # type: ignore[attr-defined]  # a jobq session
            shown = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert shown == (f"{IDLE_IN_TRANSACTION_TIMEOUT_MS // 1000}s",) if via == "direct" else ("0",)
        # A rate too: the claim then takes several round trips in one transaction (a concurrency
        # limit alone is claimed by one statement, which no freeze can split).
        q.set_limits("lim", concurrency=1, rate="100/s")
        first, second = (q.enqueue({"n": n}, queue="lim") for n in range(2))
        frozen = procs.start("frozenclaim", "--db", url)
        try:
            wait_for(
                lambda: (tmp_path / f"freezing-{frozen.pid}").exists() and stopped(frozen.pid),
                30,
                f"the claim to freeze inside its transaction\n{procs.logs()}",
            )
            frozen_at = time.monotonic()
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                states = conn.execute(
                    "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in%'"
                ).fetchall()
            assert states == [("idle in transaction",)]  # the frozen claim, its control row locked

            # A live worker's claim of the queue waits for that lock: until the server ends the
            # frozen session (before: until the frozen process was continued or killed).
            claimed: list[jobq.Job | None] = []
            live = threading.Thread(target=lambda: claimed.append(q.claim("live", queue="lim")), daemon=True)
            live.start()
            wait_for(lambda: claimed, IDLE_IN_TRANSACTION_TIMEOUT_MS / 1000 + 30, "the live claim to go on")
            waited = time.monotonic() - frozen_at
            job = claimed[0]
            assert job is not None and job.id == first and job.attempts == 1
        finally:  # also when the test fails: the frozen lock would hold up the live claim and close()
            frozen.send_signal(signal.SIGCONT)
        out = tmp_path / f"claimed-{frozen.pid}"
        wait_for(out.exists, 30, f"the continued claim to return\n{procs.logs()}")
        assert out.read_text() == ""  # its transaction was rolled back: it claimed nothing
        assert frozen.wait(30) == 0, procs.logs()
        stored = q.get(first)
        assert (stored.status, stored.lease_owner, stored.attempts) == (jobq.JobStatus.PROCESSING, "live", 1)
        waiting = q.get(second)
        assert (waiting.status, waiting.attempts) == (jobq.JobStatus.PENDING, 0)  # the limit held
        q.complete(job)
    print(f"\nthe limited queue was held {waited:.1f} s by a frozen claim")


@pytest.mark.parametrize("api", ["sync", "asyncio"])
def test_a_transaction_the_server_ended_while_it_waited_is_run_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """The same end, in one process and quickly: the URL sets a 0.2 s timeout, and the claim's
    transaction pauses 0.5 s once (the fault), with its statements sent. The server ends the
    session and rolls it back; the claim runs again on a fresh connection and returns the job,
    leased once (before: StorageError, "terminating connection due to idle-in-transaction
    timeout"). Both stores, the blocking one and ``AsyncQueue``'s own."""
    sep = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{sep}options=-c%20idle_in_transaction_session_timeout%3D200"
    claim_controlled = ops.claim_controlled
    paused: list[bool] = []

    def pausing(*args: object, **kwargs: object) -> object:
        result = yield from claim_controlled(*args, **kwargs)  # type: ignore[arg-type]
        if not paused:
            paused.append(True)
            time.sleep(0.5)  # the fault: the client stalls inside its transaction
        return result

    monkeypatch.setattr(ops, "claim_controlled", pausing)
    with jobq.Queue(url) as q:
        q.set_limits("lim", concurrency=1, rate="100/s")
        job_id = q.enqueue({}, queue="lim")
        if api == "sync":
            job = q.claim("w", queue="lim")
        else:

            async def claim() -> jobq.Job | None:
                async with jobq.AsyncQueue(url) as aq:
                    assert aq.native
                    return await aq.claim("w", queue="lim")

            job = asyncio.run(claim())
        assert paused == [True]
        assert job is not None and job.id == job_id
        stored = q.get(job_id)
        assert (stored.status, stored.attempts, stored.lease_token) == (jobq.JobStatus.PROCESSING, 1, job.lease_token)
