"""Workers on separate hosts, for real: network, UTS and PID namespaces of their own (see
``hosts.py``), each reaching PostgreSQL over its own veth link, all under one host name and the
same pids, as containers of one image are.

One host is partitioned mid-job (its link set down): its lease expires, another host rescues the
job and completes it, and once the link is back the partitioned worker's heartbeat, and a
partitioned low-level client's heartbeat and completion, are refused (``LeaseLost``) and recorded
as ``stale_write_refused``. Before that, the rescuing host watched the others' jobs for several
leases and left them alone: to a host, another host's worker is remote whatever its name and pid
say, and only its lease counts.
"""

from __future__ import annotations

import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import Hosts
from pg import PgServer, _start_server, fresh_database
from polling import wait_for
from processes import Procs

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
