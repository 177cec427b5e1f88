"""Item 8: supervisord. ``stop`` during a job drains it (or releases it when the grace is too short),
and a crash-looping program ends FATAL instead of restarting forever.

Reuses the acceptance suite's ``Supervised`` (tests/acceptance/test_supervisord.py): a real
supervisord on a copy of the repo's supervisord.conf, in its own directory.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import REPO, Recorder
from polling import wait_for

import jobq
from jobq.demo.files import new_job_file
from jobq.demo.producer import submit_file
from jobq.demo.stamps import stamps_in

sys.path.insert(0, str(REPO / "tests" / "acceptance"))
from test_supervisord import FAST_ENV, Supervised, open_queue

pytestmark = pytest.mark.slow


@pytest.fixture
def start_supervised(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Supervised]]:
    started: list[Supervised] = []

    def start(env: dict[str, str]) -> Supervised:
        root = tmp_path / f"site-{len(started)}"
        # supervisord.conf runs programs through scripts/python; link it unless Supervised does.
        if (REPO / "scripts").is_dir() and '"scripts"' not in inspect.getsource(Supervised.__init__):
            root.mkdir()
            (root / "scripts").symlink_to(REPO / "scripts")
        sv = Supervised(root, {**FAST_ENV, **env}, producers=0, consumers=1)
        started.append(sv)
        wait_for(sv.all_running, 60, "the consumer RUNNING")
        return sv

    yield start
    for sv in started:
        sv.stop()


def one_job(sv: Supervised, q: jobq.Queue) -> tuple[int, Path]:
    wait_for(lambda: any(w.stopped_at is None for w in q.workers()), 30, "the consumer registered")
    settings = jobq.Settings(database_url=q.url, data_dir=str(sv.root / "data"))
    path = new_job_file(sv.root / "data")
    job_id = submit_file(q, settings, path)
    wait_for(lambda: q.get(job_id).status == jobq.JobStatus.PROCESSING, 30, "the consumer to claim the job")
    return job_id, path


def test_stop_during_a_job_drains_it(start_supervised: Callable[..., Supervised], record: Recorder) -> None:
    sv = start_supervised({"JOBQ_CONSUMER_DELAY": "2-2", "JOBQ_SHUTDOWN_GRACE": "15"})
    q = open_queue(sv.root)
    try:
        job_id, path = one_job(sv, q)
        sv.call("stopProcess", "consumer1")  # returns once supervisord saw the process exit
        info = sv.state()["consumer1"]
        job = q.get(job_id)
        stamps = stamps_in(path.read_bytes())
    finally:
        q.close()
    record("supervisorctl stop during a job: drained", backend="sqlite", jobs=1, faults=1,
           lost=int(job.status != jobq.JobStatus.COMPLETED), duplicated=max(0, len(stamps) - 1),
           exit_status=info["exitstatus"], state=info["statename"])  # fmt: skip
    assert info["statename"] == "STOPPED" and info["exitstatus"] == 0, info
    assert job.status == jobq.JobStatus.COMPLETED and job.attempts == 1
    assert stamps == [(job_id, 1)]


def test_stop_with_too_short_a_grace_releases_the_job(
    start_supervised: Callable[..., Supervised], record: Recorder
) -> None:
    sv = start_supervised({"JOBQ_CONSUMER_DELAY": "60-60", "JOBQ_SHUTDOWN_GRACE": "1"})
    q = open_queue(sv.root)
    try:
        job_id, path = one_job(sv, q)
        sv.call("stopProcess", "consumer1")
        info = sv.state()["consumer1"]
        job = q.get(job_id)
        released = [e for e in q.events(job_id) if e.kind == jobq.EventKind.RELEASED]
    finally:
        q.close()
    record("supervisorctl stop, job longer than the grace: released", backend="sqlite", jobs=1, faults=1,
           lost=int(job.status != jobq.JobStatus.PENDING), duplicated=0, exit_status=info["exitstatus"])  # fmt: skip
    assert info["statename"] == "STOPPED", info
    assert job.status == jobq.JobStatus.PENDING and job.attempts == 0, "released at once, attempt not counted"
    assert len(released) == 1
    assert stamps_in(path.read_bytes()) == [], "the interrupted run stamped nothing"


def test_a_crash_looping_program_ends_fatal(start_supervised: Callable[..., Supervised], record: Recorder) -> None:
    sv = start_supervised({})
    # A consumer whose flags are broken exits at once (exit 2, one line); supervisord retries it
    # ``startretries`` times, then gives up: FATAL, visible in `supervisorctl status`.
    program = (
        "\n[program:crashloop]\n"
        "command=%(here)s/.venv/bin/python -u src/consumer/consumer.py --delay nonsense\n"
        "directory=%(here)s\nautostart=true\nautorestart=true\nstartsecs=10\nstartretries=2\n"
        "redirect_stderr=true\nstdout_logfile=%(here)s/log/crashloop.log\n"
    )
    sv.conf.write_text(sv.conf.read_text() + program)
    sv.call("reloadConfig")
    sv.call("addProcessGroup", "crashloop")
    wait_for(lambda: sv.state().get("crashloop", {}).get("statename") == "FATAL", 60, "crashloop to end FATAL")
    log = (sv.root / "log" / "crashloop.log").read_text()
    record("crash-looping program ends FATAL", backend="sqlite", jobs=0, faults=3, lost=0, duplicated=0,
           state="FATAL", starts=log.count("jobq: error: consumer: argument --delay:"))  # fmt: skip
    assert log.count("jobq: error: consumer: argument --delay:") == 3, log  # the first start and two retries
    assert "Traceback" not in log
    assert sv.state()["consumer1"]["statename"] == "RUNNING", "the others keep running"
