"""The seed's producer and consumer in-process, on a real SQLite database (no subprocesses)."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobq
from jobq.demo.consumer import make_stamp_handler
from jobq.demo.files import FILE_TASK, new_job_file
from jobq.demo.paths import FileMissing, UnsafePath
from jobq.demo.producer import run_producer, submit_file
from jobq.demo.stamps import stamps_in
from jobq.worker import PermanentError, Worker


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> jobq.Settings:
    monkeypatch.chdir(tmp_path)
    return jobq.Settings(
        database_url="sqlite:///data/queue.db",
        data_dir="data",
        producer_interval_seconds=0.01,
        consumer_delay="0-0.01",
        lease_seconds=5,
        poll_interval_seconds=0.05,
    )


@pytest.fixture
def queue(settings: jobq.Settings) -> Iterator[jobq.Queue]:
    q = jobq.Queue(settings=settings)
    yield q
    q.close()


class Ctx:
    """A stand-in JobContext for calling the handler directly."""

    def __init__(self, job: jobq.Job, lost: bool = False) -> None:
        self.job = job
        self.cancelled = threading.Event()
        self.lost = lost
        self.leases_checked = 0

    @property
    def payload(self) -> Any:
        return self.job.payload

    def check(self) -> None:
        if self.cancelled.is_set():
            raise jobq.JobCancelled("cancelled")

    def ensure_lease(self) -> None:
        self.leases_checked += 1
        if self.lost:
            raise jobq.LeaseLost(self.job.id, "heartbeat")


def fake_job(path: object, job_id: int = 1, run: int = 1) -> jobq.Job:
    return jobq.Job(
        id=job_id, queue="default", task=FILE_TASK, payload={"path": path}, status=jobq.JobStatus.PROCESSING,
        priority=0, run_at=0, attempts=1, max_attempts=3, created_at=0, updated_at=0, run=run,
    )  # fmt: skip


# -- producer ---------------------------------------------------------------------------------


def test_producer_writes_and_submits_files_as_the_seed_logs_them(settings: jobq.Settings, queue: jobq.Queue) -> None:
    out = io.StringIO()
    run_producer(settings, threading.Event(), queue=queue, out=out, max_files=3)
    logged = out.getvalue().splitlines()
    assert len(logged) == 3
    assert all(re.fullmatch(r"Producer: Submitting data/files/[^/]+\.txt", line) for line in logged)
    jobs = queue.list()
    assert len(jobs) == 3
    for job in jobs:
        assert job.task == FILE_TASK and job.queue == "default" and job.status == jobq.JobStatus.PENDING
        name = Path(job.payload["path"]).name
        assert job.idempotency_key == f"file:files/{name}"
        assert f"Producer: Submitting {job.payload['path']}" in logged
        assert Path(job.payload["path"]).is_file()


def test_submit_file_is_idempotent_and_validates(settings: jobq.Settings, queue: jobq.Queue) -> None:
    path = new_job_file("data")
    first = submit_file(queue, settings, str(path))
    assert submit_file(queue, settings, f"files/{path.name}") == first
    assert submit_file(queue, settings, path.resolve()) == first
    assert queue.count() == 1
    with pytest.raises(UnsafePath, match="outside the data directory"):
        submit_file(queue, settings, "/etc/passwd")
    with pytest.raises(UnsafePath, match="database file"):
        submit_file(queue, settings, "data/queue.db")
    with pytest.raises(FileMissing, match=r"^file not found: data/files/none\.txt$"):
        submit_file(queue, settings, "data/files/none.txt")
    assert queue.count() == 1


def test_a_restarted_producer_submits_its_orphans_once(settings: jobq.Settings, queue: jobq.Queue) -> None:
    submitted = new_job_file("data")
    submit_file(queue, settings, submitted)
    orphan = new_job_file("data")  # written, then the producer was killed before submitting
    stamped = new_job_file("data")  # processed long ago, its job purged since
    stamped.write_text(stamped.read_text() + "2026-01-01T00:00:00.000Z job=99\n")
    out = io.StringIO()
    run_producer(settings, threading.Event(), queue=queue, out=out, max_files=0)
    assert out.getvalue() == f"Producer: Submitting data/files/{orphan.name} (unsubmitted file from an earlier run)\n"
    assert sorted(Path(j.payload["path"]).name for j in queue.list()) == sorted([submitted.name, orphan.name])
    run_producer(settings, threading.Event(), queue=queue, out=io.StringIO(), max_files=0)
    assert queue.count() == 2


def test_producer_stops_on_its_event(settings: jobq.Settings, queue: jobq.Queue) -> None:
    stop = threading.Event()
    slow = settings.replace(producer_interval_seconds=30.0)
    t = threading.Thread(target=run_producer, args=(slow, stop), kwargs={"queue": queue, "out": io.StringIO()})
    t.start()
    stop.set()
    t.join(10)
    assert not t.is_alive()


# -- the stamp handler, called directly --------------------------------------------------------


def test_handler_stamps_and_logs(settings: jobq.Settings) -> None:
    path = new_job_file("data")
    out = io.StringIO()
    handler = make_stamp_handler(settings, out=out)
    ctx = Ctx(fake_job(str(path), job_id=4, run=2))
    assert handler(ctx) == {"stamped": True}
    assert handler(ctx) == {"stamped": False}, "a second attempt of the same run finds its stamp"
    assert stamps_in(path.read_bytes()) == [(4, 2)]
    assert out.getvalue() == f"Consumer: Processed {path}\n" * 2
    assert ctx.leases_checked == 2


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../etc/passwd", "'..'"),
        ("/etc/passwd", "outside the data directory"),
        ("data/queue.db", "database file"),
        ("data/files", "is a directory"),
        ("data/files/none.txt", "file not found: data/files/none.txt"),
        (7, "payload must be"),
    ],
)
def test_handler_fails_bad_paths_permanently(settings: jobq.Settings, path: object, message: str) -> None:
    Path("data/files").mkdir(parents=True)
    Path("data/queue.db").write_text("")
    with pytest.raises(PermanentError) as info:
        make_stamp_handler(settings, out=io.StringIO())(Ctx(fake_job(path)))
    assert message in str(info.value)


def test_handler_rejects_a_payload_without_path(settings: jobq.Settings) -> None:
    job = fake_job("x")
    bad = jobq.Job(**{**{f: getattr(job, f) for f in job.__slots__}, "payload": ["not", "a", "dict"]})
    with pytest.raises(PermanentError, match="payload must be"):
        make_stamp_handler(settings)(Ctx(bad))


def test_handler_stops_without_stamping_when_cancelled_or_lease_lost(settings: jobq.Settings) -> None:
    path = new_job_file("data")
    slow = make_stamp_handler(settings.replace(consumer_delay="30-30"), out=io.StringIO())
    ctx = Ctx(fake_job(str(path)))
    ctx.cancelled.set()
    with pytest.raises(jobq.JobCancelled):
        slow(ctx)
    lost = Ctx(fake_job(str(path)), lost=True)
    with pytest.raises(jobq.LeaseLost):
        make_stamp_handler(settings, out=io.StringIO())(lost)
    assert stamps_in(path.read_bytes()) == []


# -- producer + a real worker -----------------------------------------------------------------


def test_worker_completes_good_jobs_and_fails_bad_ones_at_once(settings: jobq.Settings, queue: jobq.Queue) -> None:
    run_producer(settings, threading.Event(), queue=queue, out=io.StringIO(), max_files=5)
    Path("data/files/gone.txt").write_text("x\n")
    gone = submit_file(queue, settings, "data/files/gone.txt")
    Path("data/files/gone.txt").unlink()
    Path("data/files/evil.txt").symlink_to("/etc/hostname")
    evil = queue.enqueue({"path": "data/files/evil.txt"}, task=FILE_TASK)
    dbjob = queue.enqueue({"path": "data/queue.db"}, task=FILE_TASK)
    out = io.StringIO()
    worker = Worker(queue, {FILE_TASK: make_stamp_handler(settings, out=out)}, concurrency=2, exit_when_idle=True)
    worker.run()
    for job in queue.list():
        if job.id in (gone, evil, dbjob):
            assert job.status == jobq.JobStatus.FAILED and job.attempts == 1, "not retried"
        else:
            assert job.status == jobq.JobStatus.COMPLETED
            assert stamps_in(Path(job.payload["path"]).read_bytes()) == [(job.id, 1)]
    assert "file not found: data/files/gone.txt" in (queue.get(gone).last_error or "")
    assert "outside the data directory" in (queue.get(evil).last_error or "")
    assert "database file" in (queue.get(dbjob).last_error or "")
    assert out.getvalue().count("Consumer: Processed data/files/") == 5


def test_a_resubmitted_job_gets_a_second_stamp_with_its_run(settings: jobq.Settings, queue: jobq.Queue) -> None:
    path = new_job_file("data")
    job_id = submit_file(queue, settings, path)
    handlers = {FILE_TASK: make_stamp_handler(settings, out=io.StringIO())}
    Worker(queue, handlers, exit_when_idle=True).run()
    queue.resubmit(job_id)
    Worker(queue, handlers, exit_when_idle=True).run()
    assert queue.get(job_id).status == jobq.JobStatus.COMPLETED and queue.get(job_id).run == 2
    assert stamps_in(path.read_bytes()) == [(job_id, 1), (job_id, 2)]
    assert path.read_text().splitlines()[-1].endswith(f" job={job_id} run=2")
