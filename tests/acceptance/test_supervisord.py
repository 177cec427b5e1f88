"""The seed's system under the real supervisord, from a temporary copy of the repo's supervisord.conf.

Each test runs its own supervisord in its own directory (``.venv`` and ``src`` symlinked to the
repo), with fast timings passed through supervisord's environment, and stops it with an RPC
``shutdown`` in a finalizer, waiting for its pidfile to go (never SIGKILL: that orphans children).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for
from supervisor.xmlrpc import SupervisorTransport

import jobq
from jobq.demo.files import new_job_file
from jobq.demo.producer import submit_file
from jobq.demo.stamps import stamps_in

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "supervisord.conf"
pytestmark = pytest.mark.slow

FAST_ENV = {
    "JOBQ_DATABASE_URL": "sqlite:///data/queue.db",
    "JOBQ_DATA_DIR": "data",
    "JOBQ_PRODUCER_INTERVAL": "0.2",
    "JOBQ_CONSUMER_DELAY": "0-0.05",
    "JOBQ_LEASE": "2",
    "JOBQ_RESCUE_INTERVAL_SECONDS": "0.5",
    "JOBQ_POLL_INTERVAL": "0.2",
    "JOBQ_SHUTDOWN_GRACE": "3",
}


def make_config(env: dict[str, str], producers: int, consumers: int) -> str:
    """The repo's supervisord.conf with N producers and M consumers, no web apps, fast timings."""
    text = CONF.read_text()
    chunks = re.split(r"(?m)^(?=\[)", text)
    programs = {m.group(1): c for c in chunks if (m := re.match(r"\[program:([^\]]+)\]", c))}
    assert {"producer1", "consumer1", "consumer2", "manager", "ops"} <= set(programs), "the seed's programs"
    kept = [c for c in chunks if not c.startswith("[program:")]
    env_line = "environment=" + ",".join(f'{k}="{v}"' for k, v in {"PYTHONUNBUFFERED": "1", **env}.items())
    kept = [re.sub(r"(?m)^environment=.*$", env_line, c) if c.startswith("[supervisord]") else c for c in kept]
    for kind, count in (("producer", producers), ("consumer", consumers)):
        for i in range(1, count + 1):
            body = programs[f"{kind}1"].replace(f"{kind}1", f"{kind}{i}")
            # Killed every ~0.5 s, a consumer may not live the 1 s that normally counts as a start.
            kept.append(re.sub(r"(?m)^startsecs=.*$", "startsecs=0", body))
    return "".join(kept)


class Supervised:
    """A supervisord running a copy of the config in ``root``, driven through its XML-RPC API."""

    def __init__(
        self, root: Path, env: dict[str, str], producers: int, consumers: int, *, daemon: bool = False
    ) -> None:
        """``daemon``: let supervisord daemonize as ``supervisord -c`` does (its umask applies only
        then); the test then knows it by its pidfile. Else it stays our child (``-n``)."""
        self.root = root
        self.daemon = daemon
        for name in ("log", "run") if daemon else ("data/files", "log", "run"):
            (root / name).mkdir(parents=True, exist_ok=True)
        (root / ".venv").symlink_to(REPO / ".venv")
        (root / "src").symlink_to(REPO / "src")
        (root / "scripts").symlink_to(REPO / "scripts")
        self.conf = root / "supervisord.conf"
        self.conf.write_text(make_config(env, producers, consumers))
        self.pidfile = root / "run" / "supervisord.pid"
        self.consumers = [f"consumer{i}" for i in range(1, consumers + 1)]
        self.producers = [f"producer{i}" for i in range(1, producers + 1)]
        # Only what the test sets reaches the programs: no JOBQ_* leaking in from the caller.
        base = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
        args = [str(REPO / ".venv/bin/supervisord"), "-c", str(self.conf)] + ([] if daemon else ["-n"])
        if os.geteuid() != 0:
            args += ["-u", str(os.geteuid())]
        self.log = open(root / "log" / "supervisord.out", "wb")  # noqa: SIM115 - closed in stop()
        # -n (no daemon): supervisord stays our child, so we can wait for it (no zombie, no guessing).
        # A daemon's first process exits once it has forked; the umask is the usual one, explicitly.
        self.proc = subprocess.Popen(
            args, cwd=root, env=base, stdout=self.log, stderr=subprocess.STDOUT, umask=0o022 if daemon else -1
        )
        if daemon:
            assert self.proc.wait(30) == 0, "supervisord did not daemonize"
            wait_for(self.pidfile.exists, 30, "the daemon's pidfile")
            self.daemon_pid = int(self.pidfile.read_text())

    def call(self, method: str, *args: Any) -> Any:
        """One supervisord XML-RPC call (``supervisor.<method>``) on a fresh connection, closed after.

        Fresh each time: a transport whose request failed (socket not up yet) is not reusable.
        """
        transport = SupervisorTransport("jobq", "jobq-demo", f"unix://{self.root}/run/supervisor.sock")
        try:
            proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
            return getattr(proxy.supervisor, method)(*args)
        finally:
            transport.close()

    def state(self) -> dict[str, dict[str, Any]]:
        try:
            return {p["name"]: p for p in self.call("getAllProcessInfo")}
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return {}

    def all_running(self) -> bool:
        states = self.state()
        return bool(states) and all(p["statename"] == "RUNNING" for p in states.values())

    def stop(self) -> None:
        """Ask supervisord to shut down (it stops the programs) and wait until it is gone."""
        try:
            for name in self.consumers:  # a consumer left SIGSTOPped would only die at stopwaitsecs
                pid = self.state().get(name, {}).get("pid")
                if pid:
                    os.kill(pid, signal.SIGCONT)
            self.call("shutdown")
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            if self.daemon:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.daemon_pid, signal.SIGTERM)  # by the pid it wrote, never by name
            elif self.proc.poll() is None:
                self.proc.terminate()  # SIGTERM is supervisord's own clean shutdown
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(60)
        finally:
            self.log.close()
        # A daemon is not our child: its pidfile going (after its programs stopped) is the sign.
        wait_for(lambda: not self.pidfile.exists(), 60 if self.daemon else 10, "the pidfile to go")

    def supervisord_log(self) -> str:
        return (self.root / "log" / "supervisord.log").read_text(errors="replace")


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(env: dict[str, str], *, producers: int, consumers: int, daemon: bool = False) -> Supervised:
        sv = Supervised(tmp_path / "site", env, producers, consumers, daemon=daemon)
        started.append(sv)
        wait_for(sv.all_running, 60, "every program RUNNING")
        return sv

    yield start
    for sv in started:
        sv.stop()


def open_queue(root: Path) -> jobq.Queue:
    return jobq.Queue(settings=jobq.Settings(database_url=f"sqlite:///{root}/data/queue.db", data_dir=f"{root}/data"))


def all_jobs(q: jobq.Queue) -> list[jobq.Job]:
    return q.list(page=jobq.Page(limit=1_000_000, descending=False))


def test_kill_9_consumers_under_load_loses_nothing_and_stamps_once(supervised: Callable[..., Supervised]) -> None:
    chaos_seconds = float(os.environ.get("JOBQ_CHAOS_SECONDS", "20"))
    sv = supervised(FAST_ENV, producers=2, consumers=3)
    rng = random.Random()
    kills: list[tuple[str, int]] = []
    end = time.monotonic() + chaos_seconds
    while time.monotonic() < end:
        name = rng.choice(sv.consumers)
        info = sv.state().get(name, {})
        if info.get("statename") == "RUNNING" and info.get("pid"):
            os.kill(info["pid"], signal.SIGKILL)
            kills.append((name, info["pid"]))
        time.sleep(0.5)  # the pace of the chaos, not a wait for an outcome
    for name in sv.producers:
        sv.call("stopProcess", name)  # graceful: no file is left unsubmitted

    q = open_queue(sv.root)
    try:

        def drained() -> bool:
            counts = q.counts()
            return counts["PENDING"] == 0 and counts["PROCESSING"] == 0

        wait_for(drained, 120, "every job to finish")
        killed_pids = {pid for _, pid in kills}
        wait_for(
            lambda: all(
                (p := sv.state().get(n, {})).get("statename") == "RUNNING" and p.get("pid") not in killed_pids
                for n in sv.consumers
            ),
            30,
            "supervisord to restart every killed consumer",
        )
        jobs = all_jobs(q)
        files = sorted((sv.root / "data" / "files").glob("*.txt"))
        by_path = {(sv.root / j.payload["path"]).resolve(): j for j in jobs}
        stamps = {f.resolve(): stamps_in(f.read_bytes()) for f in files}

        assert jobs and kills, "the test produced jobs and killed consumers"
        assert {j.status for j in jobs} == {jobq.JobStatus.COMPLETED}, q.counts()
        assert len(files) == len(jobs) == len(by_path), "every file has exactly one job and vice versa"
        duplicates = unknown = 0
        for path, found in stamps.items():
            job = by_path[path]
            per_run = collections.Counter(found)
            assert per_run[(job.id, job.run)] == 1, f"{path.name}: stamps {found} for job {job.id}"
            duplicates += sum(n - 1 for n in per_run.values())
            unknown += sum(1 for jid, _ in found if jid != job.id)
        assert duplicates == 0 and unknown == 0
        integrity = q.backend.integrity_check()  # type: ignore[attr-defined]
        assert integrity == "ok"
        if shutil.which("sqlite3"):  # the seed's own tool (Debian's SQLite) must read the database too
            cli = subprocess.run(
                ["sqlite3", str(sv.root / "data" / "queue.db"), "PRAGMA integrity_check; SELECT count(*) FROM jobs;"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            assert cli.stdout.split() == ["ok", str(len(jobs))]

        log = sv.supervisord_log()
        exits = collections.Counter(re.findall(r"exited: (consumer\d+) \(terminated by SIGKILL", log))
        assert exits == collections.Counter(name for name, _ in kills), "every kill seen and restarted"
        redeliveries = sum(j.attempts - 1 for j in jobs)
        rescued = len(q.recent_events(limit=1_000_000, kinds=["rescued"]))
        restamps = sum(1 for j in jobs if isinstance(j.result, dict) and j.result.get("stamped") is False)
        print(
            f"\nsupervisord chaos: {len(jobs)} jobs, {len(kills)} consumer kills in {chaos_seconds:.0f} s "
            f"({dict(sorted(exits.items()))}), redeliveries {redeliveries} (rescued {rescued}), "
            f"stamp already present on retry {restamps}, duplicates {duplicates}, unknown stamps {unknown}, "
            f"integrity {integrity}"
        )
    finally:
        q.close()


def test_a_frozen_consumer_cannot_stamp_or_complete_after_its_lease(supervised: Callable[..., Supervised]) -> None:
    env = {**FAST_ENV, "JOBQ_CONSUMER_DELAY": "1.5-1.5"}
    sv = supervised(env, producers=0, consumers=2)
    q = open_queue(sv.root)
    try:
        wait_for(lambda: len([w for w in q.workers() if w.stopped_at is None]) >= 2, 30, "both consumers registered")
        settings = jobq.Settings(database_url=q.url, data_dir=str(sv.root / "data"))
        path = new_job_file(sv.root / "data")
        job_id = submit_file(q, settings, path)

        owner = wait_for(lambda: q.get(job_id).lease_owner, 30, "a consumer to claim the job")
        pid = next(w.pid for w in q.workers() if w.id == owner)
        os.kill(pid, signal.SIGSTOP)  # frozen mid-job, holding a 2 s lease
        try:
            wait_for(lambda: q.get(job_id).status == jobq.JobStatus.COMPLETED, 60, "another consumer to finish it")
            completed_by = [e.actor for e in q.events(job_id) if e.kind == jobq.EventKind.COMPLETED]
            assert completed_by and owner not in completed_by
            assert stamps_in(path.read_bytes()) == [(job_id, 1)]
        finally:
            os.kill(pid, signal.SIGCONT)

        def refused() -> list[jobq.Event]:
            return [e for e in q.events(job_id) if e.kind == jobq.EventKind.STALE_WRITE_REFUSED and e.actor == owner]

        wait_for(refused, 30, "the woken consumer's write to be refused")
        running = {p["pid"] for p in sv.state().values() if p["statename"] == "RUNNING"}
        assert pid in running, "the woken consumer lives on (it only dropped the job)"
        job = q.get(job_id)
        assert job.status == jobq.JobStatus.COMPLETED
        assert stamps_in(path.read_bytes()) == [(job_id, 1)], "no second stamp from the zombie"
        assert sum(1 for e in q.events(job_id) if e.kind == jobq.EventKind.COMPLETED) == 1
        print(f"\nfrozen consumer: refused {[e.detail.get('operation') for e in refused()]}; one stamp")
    finally:
        q.close()


def test_supervisord_keeps_logs_and_the_database_private(supervised: Callable[..., Supervised]) -> None:
    """Started as ``supervisord -c supervisord.conf`` under the usual umask 022, the demo writes its
    logs, pidfile, database (-wal, -shm) and job files for its user only: the config's umask=077
    and jobq's own 0600/0700. supervisord opens log/supervisord.log before that umask applies:
    scripts/demo.sh sets umask 077 itself for it. log/ and run/ come with the clone (0755)."""
    sv = supervised(FAST_ENV, producers=1, consumers=1, daemon=True)
    q = open_queue(sv.root)
    try:
        wait_for(lambda: q.counts()["COMPLETED"] >= 1, 60, "a job to be stamped and completed")
    finally:
        q.close()
    data = sv.root / "data"
    private = {
        sv.root / "run" / "supervisord.pid": 0o600,
        data: 0o700,  # created by the first program that opened the queue
        data / "files": 0o700,
        data / "queue.db": 0o600,
        data / "queue.db-wal": 0o600,
        data / "queue.db-shm": 0o600,
        **{p: 0o600 for p in (sv.root / "log").glob("*.log") if p.name != "supervisord.log"},
        **{p: 0o600 for p in (data / "files").iterdir()},
    }
    assert {"producer1.log", "consumer1.log"} <= {p.name for p in (sv.root / "log").iterdir()}
    modes = {str(p.relative_to(sv.root)): oct(p.stat().st_mode & 0o777) for p in private}
    assert modes == {str(p.relative_to(sv.root)): oct(m) for p, m in private.items()}
