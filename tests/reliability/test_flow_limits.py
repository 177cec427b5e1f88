"""Flow control under fire: 16 processes (12 workers, 4 producers), workers killed with SIGKILL
and restarted, while a sampler reads every PROCESSING job many times a second.

The limits are enforced by the claim (docs/flow-control.md), so they must hold at every moment
whatever dies when: 0 samples above a queue's concurrency limit, 0 above a per-key limit, and a
rate limit's admissions (the claims in its jobs' histories, each stamped by its claim's
transaction) at most 1% above the rate in any window.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Recorder, backend_name, scale
from polling import wait_for

import jobq

pytestmark = pytest.mark.slow
AGENTS = Path(__file__).resolve().parent / "flow_agents.py"
WORKERS, PRODUCERS = 12, 4
CONCURRENCY = 3
PER_KEY = 1
RATE_COUNT, RATE_WINDOW = 10, 1.0
KILL_EVERY_SECONDS = 1.0


class Fleet:
    """The agent processes, always stopped at the end (by PID)."""

    def __init__(self, url: str, out: Path) -> None:
        self.url, self.out = url, out
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.out / f"flow-{len(self.procs)}-{role}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(AGENTS), role, "--db", self.url, *args], stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def fleet(backend_url: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(backend_url, tmp_path)
    yield f
    f.stop()


def _sampler(url: str) -> tuple[Callable[[str], list[Any]], Callable[[], None]]:
    """A plain connection (as an outside monitor): one statement is one consistent snapshot."""
    if url.startswith("sqlite:///"):
        import apsw

        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        conn.set_busy_timeout(5000)
        return (lambda sql: conn.execute(sql).fetchall()), conn.close
    from pg import raw_connect

    pg = raw_connect(url, autocommit=True)
    return (lambda sql: pg.execute(sql).fetchall()), pg.close


def _max_in_window(times: list[float], window: float) -> int:
    """The most admissions in any half-open window ``[t, t + window)``."""
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def test_limits_hold_at_every_moment_with_kills_and_restarts(backend_url: str, fleet: Fleet, record: Recorder) -> None:
    seconds = scale(12, 30)
    with jobq.Queue(backend_url) as q:
        q.set_limits("conc", concurrency=CONCURRENCY, actor="test")
        q.set_limits("keyed", per_key=PER_KEY, actor="test")
        q.set_limits("rated", rate=(RATE_COUNT, RATE_WINDOW), actor="test")
    workers = [fleet.start("worker") for _ in range(WORKERS)]
    acks = fleet.out / "acks.log"
    producers = [fleet.start("producer", "--seconds", str(seconds), "--acks", str(acks)) for _ in range(PRODUCERS)]
    query, close = _sampler(backend_url)
    rng = random.Random(16)
    samples = kills = 0
    over_concurrency = over_key = 0
    max_conc = max_key = max_keys_at_once = 0
    try:
        with jobq.Queue(backend_url) as q:
            wait_for(lambda: len(q.workers()) >= WORKERS, 120, "every worker registered")
        end = time.monotonic() + seconds
        next_kill = time.monotonic() + KILL_EVERY_SECONDS
        while time.monotonic() < end:
            rows = query(
                "SELECT queue, concurrency_key, count(*) FROM jobs WHERE status = 'PROCESSING' "
                "GROUP BY queue, concurrency_key"
            )
            samples += 1
            conc = sum(n for q_, _, n in rows if q_ == "conc")
            keyed = [n for q_, k, n in rows if q_ == "keyed" and k is not None]
            max_conc = max(max_conc, conc)
            max_key = max([max_key, *keyed])
            max_keys_at_once = max(max_keys_at_once, len(keyed))
            over_concurrency += conc > CONCURRENCY
            over_key += any(n > PER_KEY for n in keyed)
            if time.monotonic() >= next_kill:
                victim = rng.randrange(WORKERS)
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait(10)
                workers[victim] = fleet.start("worker")
                kills += 1
                next_kill += KILL_EVERY_SECONDS
            time.sleep(0.005)
        for proc in producers:  # they end on their own after `seconds`: then every ack is written
            assert proc.wait(120) == 0, "a producer failed"
        statuses = Counter({str(s): int(n) for s, n in query("SELECT status, count(*) FROM jobs GROUP BY status")})
        # Every claim of every job, from its history: claims store no event row (issue 13), the
        # history derives each attempt's claim from the job row or from the event that ended that
        # attempt (a rescue carries the claim it ended). A job handed out again without going
        # back to PENDING in between (a rescue or a release) would have been held twice at once.
        admitted: list[float] = []
        handed_twice = 0
        with jobq.Queue(backend_url) as q:
            for job in q.list(page=jobq.Page(limit=1_000_000)):
                history = q.events(job.id)
                claims = [e.at for e in history if e.kind == "claimed"]
                if job.queue == "rated":
                    admitted += claims
                given_back = sum(1 for e in history if e.kind in ("rescued", "released"))
                handed_twice += len(claims) - given_back > 1
        admitted.sort()
    finally:
        close()
    acked = sum(int(line) for line in acks.read_text().split())
    lost = max(0, acked - sum(statuses.values()))
    most = _max_in_window(admitted, RATE_WINDOW)
    over_admission = max(0, most - RATE_COUNT) / RATE_COUNT
    record(
        f"flow control: {WORKERS} workers + {PRODUCERS} producers, SIGKILL and restart",
        backend=backend_name(backend_url),
        jobs=sum(statuses.values()),
        faults=kills,
        lost=lost,
        duplicated=int(handed_twice),
        samples=samples,
        samples_above_concurrency=over_concurrency,
        samples_above_per_key=over_key,
        max_processing=max_conc,
        max_per_key=max_key,
        keys_at_once=max_keys_at_once,
        rate_admitted=len(admitted),
        rate_max_per_window=most,
        rate_over_admission_pct=round(over_admission * 100, 2),
        failed=statuses["FAILED"],
    )
    assert samples > 100 and kills >= seconds // 2
    assert over_concurrency == 0 and max_conc <= CONCURRENCY
    assert over_key == 0 and max_key <= PER_KEY
    assert max_conc == CONCURRENCY and max_keys_at_once > 1, "the limits were never reached: the test saw no load"
    assert over_admission <= 0.01, (most, RATE_COUNT)
    assert most >= RATE_COUNT // 2, "the rate was never approached: the test saw no load"
    assert statuses["FAILED"] == 0, statuses  # held back by a limit is never a failure
    assert lost == 0 and handed_twice == 0, (acked, statuses, handed_twice)
