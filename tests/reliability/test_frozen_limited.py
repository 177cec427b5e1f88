"""A worker frozen (SIGSTOP) while it holds the only slot of a concurrency-limited queue
(``Queue.set_limits(queue, concurrency=1)``): the slot stays taken (the limit counts PROCESSING
rows) until the frozen job's lease expires and the rescuer returns it; only then does another
worker get a job of the queue, the frozen one among them. Continued (SIGCONT), the frozen worker's
write is refused (fenced by the lease token) and every effect lands once."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

from children import stopped
from harness import Agents, Recorder, backend_name
from polling import wait_for
from test_frozen_prefetch import _in_transaction

import jobq

LEASE_SECONDS = 1.5


def test_a_frozen_worker_keeps_its_slot_until_rescued_then_is_fenced(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder
) -> None:
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url))
    try:
        q.set_limits("lim", concurrency=1)
        frozen_id = q.enqueue({"freeze": True}, queue="lim")
        others = q.enqueue_many([{"n": n} for n in range(3)], queue="lim")
        args = ("--db", backend_url, "--lease", str(LEASE_SECONDS), "--out", str(tmp_path))
        frozen = agents.start("limitedworker", *args, "--freeze")
        wait_for(lambda: frozen.poll() is None and stopped(frozen.pid), 60, f"the worker to freeze\n{agents.logs()}")
        assert (tmp_path / "frozen").read_text().split() == [str(frozen_id)]
        assert not _in_transaction(backend_url), "frozen inside a transaction: not what this test is about"
        held = q.get(frozen_id)
        assert held.status == jobq.JobStatus.PROCESSING and held.lease_expires_at is not None
        owner, expired_at = held.lease_owner, held.lease_expires_at

        other = agents.start("limitedworker", *args)
        wait_for(lambda: q.counts()["COMPLETED"] == 1 + len(others), 60, f"every job completed\n{agents.logs()}")
        # The slot stayed taken while the frozen job's lease ran: no job of the queue was claimed
        # before it expired, and the frozen job was run again elsewhere after its rescue.
        for job_id in [frozen_id, *others]:
            job = q.get(job_id)
            assert job.started_at is not None and job.started_at >= expired_at, (job_id, job.started_at, expired_at)
            assert job.lease_owner != owner
        again = q.get(frozen_id)
        assert again.attempts == 2
        assert [e.kind for e in q.events(frozen_id)].count(jobq.EventKind.RESCUED) == 1

        frozen.send_signal(signal.SIGCONT)

        def refused() -> list[str]:
            return [
                str(e.detail["operation"])
                for e in q.events(frozen_id)
                if e.kind == jobq.EventKind.STALE_WRITE_REFUSED and e.actor == owner
            ]

        late = wait_for(refused, 30, f"the frozen worker's late write to be refused\n{agents.logs()}")
        for proc in (frozen, other):
            proc.terminate()
            proc.wait(30)
        assert frozen.returncode == other.returncode == 0, agents.logs()
        assert "Traceback" not in agents.logs(100_000)
        effects = collections.Counter(int(line.split()[0]) for line in (tmp_path / "effects").read_text().splitlines())
        assert effects == {job_id: 1 for job_id in [frozen_id, *others]}, effects
        assert q.get(frozen_id).status == jobq.JobStatus.COMPLETED
    finally:
        q.close()
    record(
        "worker frozen (SIGSTOP) holding a limited queue's only slot, then SIGCONT",
        backend=backend_name(backend_url),
        jobs=1 + len(others),
        faults=1,
        lost=0,
        duplicated=0,
        redelivered=1,
        refused=len(late),
        refused_operations=",".join(sorted(set(late))),
    )
