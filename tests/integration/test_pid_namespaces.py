"""A live worker in another PID namespace (same host name, same SQLite file) is never rescued.

Two containers of one pod, or ``docker --network host``, share the host name and the data volume
but not the process table: a pid read from the other container means nothing here. This runs that
case with real processes: one worker runs a long job inside ``unshare --pid --fork --mount-proc``
while a second worker on the same database, in this test's PID namespace, rescues every 0.2 s.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from hosts import children
from polling import wait_for
from processes import Procs, effects

import jobq
from jobq import JobStatus

pytestmark = pytest.mark.slow

RESCUE_INTERVAL = "0.2"
WATCH_SECONDS = 3.0
"""How long the second worker must have been registered (its heartbeat row shows it) before the
job is let finish: about 15 of its rescue passes, and as many of the first worker's."""

# Run inside the new PID namespace, as its pid 1: move the namespace's last pid so that the worker
# gets the pid chosen by the test, then run the worker as a child. Not as pid 1 (`exec`, or a
# shell exec'ing its last command; hence `exit $?`): pid 1 or 2 also exists in the root namespace,
# so the old pid check would have found it "alive" and hidden the bug.
NS_SCRIPT = 'echo "$0" > /proc/sys/kernel/ns_last_pid && "$@"; exit $?'


def _unshare_prefix() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creating a PID namespace (unshare --pid) is privileged")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) from util-linux to create a PID namespace")
    # --kill-child: if unshare is killed (by its pid), the namespace's pid 1 gets SIGKILL, which
    # ends every process in the namespace; without it they would outlive unshare. unshare then
    # ignores SIGTERM: the worker inside is stopped by its own pid (_stop_namespace).
    return [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", NS_SCRIPT]


def _free_pid() -> int:
    """A pid no process of this namespace has now, from the top of the range (pids are handed
    out upwards, so the top is reached last)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(pid_max - 100, 1000, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    pytest.fail("no free pid in this namespace")


def _stop_namespace(unshare: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the worker inside (unshare -> sh, the namespace's pid 1 -> the worker), as
    supervisord would stop it, and return unshare's exit status (the worker's); SIGKILL unshare,
    and so the whole namespace, if that takes longer than 30 s."""
    if unshare.poll() is not None:
        return unshare.returncode
    for shell in children(unshare.pid):
        for worker in children(shell):
            os.kill(worker, signal.SIGTERM)
    try:
        return unshare.wait(30)
    except subprocess.TimeoutExpired:
        unshare.kill()
        unshare.wait(10)
        return None


def test_a_live_worker_in_another_pid_namespace_is_never_rescued(
    sqlite_url: str, procs: Procs, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    prefix = _unshare_prefix()
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue({}, task="gated")
        ns_pid = _free_pid()
        inside = procs.start(
            "worker",
            "--db",
            sqlite_url,
            "--grace",
            "2",
            "--rescue-interval",
            RESCUE_INTERVAL,
            wrap=[*prefix, str(ns_pid - 1)],
        )
        request.addfinalizer(lambda: _stop_namespace(inside))  # before procs.stop_all, also on failure
        wait_for(
            lambda: list(tmp_path.glob(f"started-{job_id}-*")) or inside.poll() is not None,
            60,
            "the job to start in the new PID namespace",
        )
        assert inside.poll() is None, f"the namespaced worker exited: {procs.logs()[-3000:]}"
        (runner,) = q.workers()
        assert runner.pid == ns_pid, f"worker pid {runner.pid}, wanted {ns_pid}\n{procs.logs()[-3000:]}"

        watcher = procs.start(
            "worker", "--db", sqlite_url, "--lease", "3", "--grace", "2", "--rescue-interval", RESCUE_INTERVAL
        )
        wait_for(
            lambda: [w for w in q.workers() if w.pid == watcher.pid and w.last_seen_at >= w.started_at + WATCH_SECONDS],
            60,
            "the second worker to run its rescuer for a while",
        )
        # The trap the old check fell into: seen from here, the running worker's pid is no process.
        assert not os.path.exists(f"/proc/{ns_pid}"), f"pid {ns_pid} was reused here: the scenario did not happen"
        job = q.get(job_id)
        history = [str(e.kind) for e in q.events(job_id)]
        assert (job.status, job.lease_owner) == (JobStatus.PROCESSING, runner.id), (history, procs.logs()[-3000:])
        workers = q.workers()
        assert {w.host for w in workers} == {runner.host}  # same host name...
        tables = {w.process_table for w in workers}  # ...two process tables of one boot
        assert len(tables) == 2 and None not in tables and len({t.split("/")[0] for t in tables if t}) == 1
        assert [w.id for w in workers if w.stopped_at is not None] == [], "a live worker was marked stopped"

        (tmp_path / f"release-{job_id}").write_text("")
        wait_for(lambda: q.get(job_id).status == JobStatus.COMPLETED, 60, "the job to complete")
        job = q.get(job_id)
        kinds = collections.Counter(str(e.kind) for e in q.events(job_id))
        assert (kinds["claimed"], kinds["rescued"], kinds["completed"]) == (1, 0, 1), kinds
        assert job.attempts == 1 and effects(tmp_path) == [job_id]
        assert [w.id for w in q.workers() if w.stopped_at is not None] == []

        watcher.terminate()
        assert watcher.wait(30) == 0
        assert _stop_namespace(inside) == 0, procs.logs()[-3000:]
        assert all(w.stopped_at is not None for w in q.workers())  # both stopped themselves
