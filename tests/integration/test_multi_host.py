"""Workers on separate hosts, for real: network, UTS and PID namespaces of their own (see
``hosts.py``), each reaching PostgreSQL over its own veth link, all under one host name and the
same pids, as containers of one image are.

One host is partitioned mid-job (its link set down): its lease expires, another host rescues the
job and completes it, and once the link is back the partitioned worker's heartbeat, and a
partitioned low-level client's heartbeat and completion, are refused (``LeaseLost``) and recorded
as ``stale_write_refused``. Before that, the rescuing host watched the others' jobs for several
leases and left them alone: to a host, another host's worker is remote whatever its name and pid
say, and only its lease counts.

Then hosts whose clocks are a minute off, one killed and one frozen: their jobs are rescued and
their workers marked lost when the server's time says, neither a minute late nor early.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import Host, Hosts, descendants
from pg import PgServer, _start_server, fresh_database
from polling import wait_for
from processes import Procs, effects

import jobq
from jobq import JobStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HOSTNAME = "app"
"""Every host's name: the same, as two containers of one name."""
LEASE = "3"
WATCH_LEASES = 3
"""How many leases the rescuing host watches the others' live jobs before the partition."""


@pytest.fixture(scope="module")
def network() -> Iterator[Hosts]:
    hosts = Hosts(3)
    try:
        yield hosts
    finally:
        hosts.close()


@pytest.fixture(scope="module")
def network_server(network: Hosts) -> Iterator[PgServer]:
    """A PostgreSQL server of this module listening on this side of every host's link."""
    server = _start_server(listen=network.server_addresses, hba=[f"host all all {network.subnet} trust"])
    try:
        yield server
    finally:
        server.stop()
        assert server.data_dir is not None
        shutil.rmtree(Path(server.data_dir).parent, ignore_errors=True)


@pytest.fixture
def hosts(network: Hosts, procs: Procs) -> Iterator[Hosts]:
    """The module's hosts; their processes are killed and every link is up again after each test.
    Set up after ``procs`` so that it is torn down first: ``unshare --kill-child`` ignores the
    SIGTERM of ``procs``' teardown, which then waited 15 s for each host's process."""
    try:
        yield network
    finally:
        network.stop_processes()
        network.heal_all()


def _at(url: str, address: str) -> str:
    parts = urllib.parse.urlsplit(url)
    user, _, hostport = parts.netloc.rpartition("@")
    port = hostport.rsplit(":", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{address}:{port}" if user else f"{address}:{port}"))


def _refusals(q: jobq.Queue, job_id: int, actor: str) -> list[str]:
    return [
        e.detail.get("operation", "") for e in q.events(job_id) if e.kind == "stale_write_refused" and e.actor == actor
    ]


def test_a_partitioned_host_loses_its_job_to_another_and_its_late_writes_are_refused(
    network_server: PgServer, hosts: Hosts, procs: Procs, tmp_path: Path
) -> None:
    host_a, host_b, host_c = hosts.hosts
    with fresh_database(network_server) as url, jobq.Queue(url) as q:
        common = ("--lease", LEASE, "--rescue-interval", "0.2")
        # Host A: a real worker takes a job whose handler ignores its lease and runs until released.
        job = q.enqueue({}, task="stubborn")
        hosts.track(procs.start("worker", "--db", _at(url, host_a.server_address), *common, wrap=host_a.wrap(HOSTNAME)))
        held = wait_for(lambda: (j := q.get(job)).status == JobStatus.PROCESSING and j, 120, "host A to claim the job")
        worker_a = held.lease_owner
        # Host C: a program on the low-level API claims another job and heartbeats it.
        job_c = q.enqueue({}, task="stubborn")
        hosts.track(procs.start("hold", "--db", _at(url, host_c.server_address), *common, wrap=host_c.wrap(HOSTNAME)))
        wait_for(lambda: (tmp_path / f"held-{job_c}").exists(), 120, "host C to claim its job")
        holder_c = (tmp_path / f"held-{job_c}").read_text()
        # Host B: a real worker, same host name, rescuing every 0.2 s.
        hosts.track(procs.start("worker", "--db", _at(url, host_b.server_address), *common, wrap=host_b.wrap(HOSTNAME)))
        wait_for(lambda: len(q.workers()) == 2, 120, "host B's worker to register")
        (worker_b,) = [w.id for w in q.workers() if w.id != worker_a]

        # Watch B's rescuer for a few leases: the live jobs of A and C stay where they are.
        def watched() -> bool:
            row = next(w for w in q.workers() if w.id == worker_b)
            return row.last_seen_at - row.started_at >= WATCH_LEASES * float(LEASE)

        wait_for(watched, 120, f"host B to run for {WATCH_LEASES} leases")
        rows = {w.id: w for w in q.workers()}
        assert rows[worker_a].host == rows[worker_b].host == HOSTNAME
        assert rows[worker_a].pid == rows[worker_b].pid  # one image, fresh PID namespaces
        assert rows[worker_a].process_table != rows[worker_b].process_table
        assert (q.get(job).lease_token, q.get(job).lease_owner) == (held.lease_token, worker_a)
        assert q.get(job_c).status == JobStatus.PROCESSING and q.get(job_c).lease_owner == holder_c

        host_a.partition()
        host_c.partition()
        cut = time.monotonic()
        wait_for(lambda: q.get(job).status == JobStatus.COMPLETED, 120, "host B to rescue and complete A's job")
        wait_for(lambda: q.get(job_c).status == JobStatus.COMPLETED, 120, "host B to rescue and complete C's job")
        taken_over = time.monotonic() - cut
        for job_id, owner in ((job, worker_a), (job_c, holder_c)):
            done = q.get(job_id)
            assert done.result == {"host": HOSTNAME, "attempt": 2}
            kinds = [(e.kind, e.actor) for e in q.events(job_id)]
            assert ("rescued", worker_b) in kinds and ("claimed", worker_b) in kinds
            assert [k for k, _ in kinds].count("completed") == 1
            assert _refusals(q, job_id, owner) == []  # nothing came through while partitioned

        host_a.heal()
        host_c.heal()
        healed, healed_at = time.monotonic(), q.clock()
        # A's worker: its next heartbeat is refused and recorded; it stops the run (the handler
        # ignores that, and its result, once released, is not written: the lease is known lost).
        wait_for(lambda: "heartbeat" in _refusals(q, job, worker_a), 120, "A's refused heartbeat")
        refused_after = time.monotonic() - healed
        (tmp_path / f"release-{job}").write_text("")
        # C's client: its heartbeat and its completion both raise LeaseLost and are recorded.
        (tmp_path / f"go-{job_c}").write_text("")
        outcome = wait_for(lambda: (tmp_path / f"outcome-{job_c}").exists(), 120, "C's late writes")
        assert outcome
        assert (tmp_path / f"outcome-{job_c}").read_text() == "heartbeat:LeaseLost complete:LeaseLost"
        assert {"heartbeat", "complete"} <= set(_refusals(q, job_c, holder_c))

        # A's worker carries on (its registry row beats again), the queue works on, and nothing
        # moved the old jobs.
        wait_for(
            lambda: next(w for w in q.workers() if w.id == worker_a).last_seen_at > healed_at, 120, "A to beat again"
        )
        more = q.enqueue_many([{"n": n} for n in range(20)])
        wait_for(lambda: all(q.get(i).status == JobStatus.COMPLETED for i in more), 120, "new jobs after the heal")
        for job_id in (job, job_c):
            assert q.get(job_id).result == {"host": HOSTNAME, "attempt": 2}
            assert [e.kind for e in q.events(job_id)].count("completed") == 1
        assert "lease lost" in procs.logs()
    print(
        f"\npartition of 2 of 3 hosts, lease {LEASE} s: both jobs rescued and completed elsewhere "
        f"{taken_over:.1f} s after the cut; A's heartbeat refused {refused_after:.1f} s after the heal; "
        "late heartbeat and completion of C refused; 0 duplicate completions"
    )


SKEW = 60.0
"""How far the clocks of the killed and the frozen host are off (procs.py's JOBQ_TEST_CLOCK_SKEW)."""


def test_hosts_a_minute_off_lose_their_jobs_on_time_when_killed_or_frozen(
    network_server: PgServer, hosts: Hosts, procs: Procs, tmp_path: Path
) -> None:
    """Hosts whose clocks are a minute off, under faults. A's clock runs a minute ahead and A is
    killed (its PID namespace goes: a container's power off); C's runs a minute behind and C's
    worker is frozen (SIGSTOP) past its lease. B, whose clock is right, rescues both jobs once
    their leases are over by the server's time, and runs them: not a minute late (A's lease,
    stamped by A's own clock, would have held 63 s) and not before the faults (C's, stamped by
    C's, had expired as it was written). A and C are marked lost on time too. C, continued, has
    its late heartbeat refused and gives its job up; each job's effect lands once, from B. The
    hosts share one name and their workers one pid, as containers of one image do, so the
    registry cannot tell B that either worker is gone: only their leases and beats can."""
    host_a, host_b, host_c = hosts.hosts
    with fresh_database(network_server) as url, jobq.Queue(url) as q:
        common = ("--lease", LEASE, "--rescue-interval", "0.2")

        def start(host: Host, skew: float, *args: str) -> subprocess.Popen[bytes]:
            env = {"JOBQ_TEST_CLOCK_SKEW": repr(skew)}
            db = ("--db", _at(url, host.server_address))
            return hosts.track(procs.start("worker", *db, *common, *args, wrap=host.wrap(HOSTNAME), env=env))

        def claimed(job_id: int) -> str:
            """Who claimed ``job_id``, once someone did."""
            job: jobq.Job = wait_for(
                lambda: (j := q.get(job_id)).status == JobStatus.PROCESSING and j, 120, f"{job_id}'s claim"
            )
            assert job.lease_owner is not None
            return job.lease_owner

        job_a = q.enqueue({}, task="gated")
        proc_a = start(host_a, SKEW)
        worker_a = claimed(job_a)
        job_c = q.enqueue({}, task="gated")
        proc_c = start(host_c, -SKEW)
        worker_c = claimed(job_c)
        start(host_b, 0.0, "--concurrency", "2")
        wait_for(lambda: len(q.workers()) == 3, 120, "host B's worker to register")
        (worker_b,) = [w.id for w in q.workers() if w.id not in (worker_a, worker_c)]
        rows = {w.id: w for w in q.workers()}
        assert rows[worker_a].pid == rows[worker_b].pid == rows[worker_c].pid  # pids tell nothing

        def watched() -> bool:
            row = next(w for w in q.workers() if w.id == worker_b)
            return row.last_seen_at - row.started_at >= WATCH_LEASES * float(LEASE)

        wait_for(watched, 120, f"host B to run for {WATCH_LEASES} leases")
        for job_id, owner in ((job_a, worker_a), (job_c, worker_c)):
            assert q.get(job_id).lease_owner == owner, [(e.kind, e.actor) for e in q.events(job_id)]

        faulted_at = q.clock()
        proc_a.kill()  # unshare --kill-child: A's whole PID namespace goes with it
        proc_a.wait(30)
        frozen = descendants(proc_c.pid)
        assert frozen, "host C runs no process"
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            for job_id in (job_a, job_c):
                wait_for(lambda j=job_id: q.get(j).lease_owner == worker_b, 120, f"host B to take {job_id} over")
            for job_id in (job_a, job_c):
                (rescued,) = [e for e in q.events(job_id) if e.kind == "rescued"]
                # Rescued once its lease, beaten up to the fault, was over: within a lease and
                # the rescuer's period after the fault, plus scheduling slack; a minute late
                # (A's, judged by a minute-fast stamp) or before the fault (C's) fails.
                assert rescued.actor == worker_b
                assert faulted_at <= rescued.at <= faulted_at + float(LEASE) + 10, (rescued.at - faulted_at, job_id)

            def lost() -> list[str]:
                ended = {w.id: w.end_reason for w in q.workers() if w.stopped_at is not None}
                return [w for w in (worker_a, worker_c) if ended.get(w) == jobq.WorkerEnd.LOST]

            wait_for(lambda: len(lost()) == 2, 120, "host B to mark A and C lost")
            for w in q.workers():
                if w.id in (worker_a, worker_c):
                    # Two leases unheard, then the rescuer's next look: not a minute more or less.
                    assert w.stopped_at is not None
                    assert faulted_at + float(LEASE) <= w.stopped_at <= faulted_at + 3 * float(LEASE) + 10, (
                        w.id,
                        w.stopped_at - faulted_at,
                    )
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        # C, continued: its next heartbeat is refused and recorded, and its run stops.
        wait_for(lambda: "heartbeat" in _refusals(q, job_c, worker_c), 120, "C's refused heartbeat")
        wait_for(lambda: "lease lost" in procs.logs(), 120, "C to stop its run")
        for job_id in (job_a, job_c):
            (tmp_path / f"release-{job_id}").write_text("")
        for job_id in (job_a, job_c):
            wait_for(lambda j=job_id: q.get(j).status == JobStatus.COMPLETED, 120, f"B to complete {job_id}")
            done = q.get(job_id)
            assert done.attempts == 2 and done.lease_owner == worker_b
            assert [e.kind for e in q.events(job_id)].count("completed") == 1
        assert sorted(effects(tmp_path)) == sorted([job_a, job_c])
        assert "clock is 60.0 s ahead of the database server's" in procs.logs()
        assert "clock is 60.0 s behind the database server's" in procs.logs()
    print(
        f"\nhosts {SKEW:.0f} s ahead (killed) and behind (frozen), lease {LEASE} s: both jobs rescued "
        "on time by the host whose clock is right, both workers marked lost on time, each effect once"
    )
