"""The apps' Queue under a bad database (jobq.web.health), on real SQLite files and processes: a
locked database fails an action fast and names the process holding the lock while reads go on; a
replaced file is reopened; a deleted file, or a database that cannot be read, shows the last
figures as stale and refuses actions at once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from children import start_lock_holder, stop_lock_holder, stopped, wait_locked
from polling import wait_for

from jobq import JobStatus, Queue, StorageError
from jobq.backends.base import HistogramBounds
from jobq.queue import read_methods
from jobq.web import health, ops_model


def _db(path: Path, jobs: int) -> str:
    url = f"sqlite:///{path}"
    with Queue(url) as q:
        for n in range(jobs):
            q.enqueue({"n": n})
    return url


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A database with 3 pending jobs, and another process holding its write lock."""
    url = _db(tmp_path / "queue.db", 3)
    proc = start_lock_holder(tmp_path / "queue.db")
    try:
        wait_locked(proc)
        yield url, proc
    finally:
        stop_lock_holder(proc)


def test_a_locked_database_fails_an_action_fast_naming_the_holder_and_reads_go_on(
    lock_holder: tuple[str, subprocess.Popen[str]],
) -> None:
    url, holder = lock_holder
    started = time.monotonic()
    q = health.WatchedQueue(url)  # opening an up-to-date database needs no write lock
    try:
        assert q.counts()["PENDING"] == 3  # WAL: reads never wait for the writer
        assert "busy_timeout" not in q.display_url  # the app's own option is not shown
        with pytest.raises(StorageError) as caught:
            q.cancel_many(where=None, ids=[1], actor="alice")
        took = time.monotonic() - started
        message = str(caught.value)
        assert f"pid {holder.pid}" in message and "holds its write lock" in message, message
        assert "Nothing was changed" in message and "COMMIT / ROLLBACK" in message
        # The busy timeout (2 s) bounds the whole wait; the default would retry for 120 s.
        assert took < health.APP_BUSY_TIMEOUT_MS_DEFAULT / 1000 + 8, took
        assert q.status().stale_since is None  # a refused action is not a database that is down
        assert q.counts()["PENDING"] == 3
    finally:
        q.close()
    holder.stdin.close()  # type: ignore[union-attr]
    holder.wait(timeout=30)
    with Queue(url) as plain:
        assert plain.get(1).status == JobStatus.PENDING


def test_a_process_holding_the_write_lock_is_named_a_frozen_writer(
    lock_holder: tuple[str, subprocess.Popen[str]],
) -> None:
    """The ops page's first alert (ops_model): a holder of the write lock inside a transaction
    left open (named once it held the lock a second while nobody committed), or stopped (named
    with how to continue it). A worker holds the lock for milliseconds at a time, and commits:
    test_sqlite_open.py's churning writer is no blocker."""
    url, holder = lock_holder
    q = health.WatchedQueue(url)
    try:
        (open_one,) = q.blockers()
        assert open_one.startswith(f"pid {holder.pid} (") and "while nobody committed" in open_one
        holder.send_signal(signal.SIGSTOP)
        wait_for(lambda: stopped(holder.pid), 30, "the holder to stop")
        (frozen,) = q.blockers()
        assert frozen.startswith(f"pid {holder.pid} (") and f"`kill -CONT {holder.pid}` continues it" in frozen
        alerts = ops_model.compute_alerts(q.stats(), [], q.wall_time(), frozen_writers=[frozen])
        assert alerts[0].message.startswith(f"Every write waits: the queue's write lock is held by pid {holder.pid}")
        holder.send_signal(signal.SIGCONT)
        wait_for(lambda: not stopped(holder.pid), 30, "the holder to run again")
        stop_lock_holder(holder)  # its transaction is rolled back
        assert q.blockers() == []
    finally:
        holder.send_signal(signal.SIGCONT)
        q.close()


def test_a_replaced_file_is_reopened_and_a_deleted_one_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    url = _db(path, 1)
    q = health.WatchedQueue(url)
    try:
        assert q.counts()["PENDING"] == 1
        # Another database moved into place (a restore): a new inode at the same path.
        _db(tmp_path / "other.db", 4)
        os.replace(tmp_path / "other.db", path)
        assert q.counts()["PENDING"] == 4
        status = q.status()
        assert status.replaced_at is not None and status.stale_since is None

        # Deleted and not replaced: the old open file must not be shown as live.
        os.unlink(path)
        assert q.counts()["PENDING"] == 4  # the last known figures
        status = q.status()
        assert status.stale_since is not None and "deleted or moved away" in status.reason
        with pytest.raises(StorageError, match="not attempted"):
            q.cancel_many(ids=[1], actor="alice")
        with pytest.raises(StorageError, match="nothing read earlier"):
            q.latest(None, 5)

        # Re-created (deleted, then a new one made at the path): reopened, live again.
        _db(tmp_path / "third.db", 2)
        shutil.move(tmp_path / "third.db", path)
        assert q.counts()["PENDING"] == 2
        assert q.status().stale_since is None
    finally:
        q.close()


class _Flaky:
    """Stands in for a Queue whose server goes away and comes back (the real one: tests/web/test_browser_robust.py)."""

    def __init__(self) -> None:
        self.down = False
        self.slow = 0.0
        self.backend = object()
        self.pending = 5

    def counts(self) -> dict[str, int]:
        time.sleep(self.slow)
        if self.down:
            raise StorageError("PostgreSQL at 127.0.0.1:5: connection refused")
        return {"PENDING": self.pending}

    def resubmit_many(self, **kwargs: object) -> list[object]:
        return []

    def wall_time(self) -> float:
        return 4242.0  # the store's time as a Queue keeps it (no read)

    def close(self) -> None:
        pass


def test_a_database_that_cannot_be_read_shows_the_last_figures_then_recovers() -> None:
    flaky = _Flaky()
    clock = [1000.0]
    q = health.WatchedQueue("postgresql://u:secret@h/db", opener=lambda u, c: flaky, clock=lambda: clock[0])  # type: ignore[arg-type,return-value]
    try:
        assert q.counts() == {"PENDING": 5}
        clock[0] = 1010.0
        flaky.down = True
        assert q.counts() == {"PENDING": 5}
        status = q.status()
        assert status.stale_since == 1000.0 and "connection refused" in status.reason
        assert q.wall_time() == 4242.0  # the page's "now" still answers: no read, nothing refused
        with pytest.raises(StorageError, match="not attempted"):
            q.resubmit_many(where=None)
        flaky.down, flaky.pending = False, 7
        clock[0] = 1020.0
        assert q.counts() == {"PENDING": 7}
        assert q.status().stale_since is None
        assert q.resubmit_many(where=None) == []

        # Slow but not failing: the page stops waiting, shows the last figures, and the late
        # answer counts once it arrives; actions are not refused for slowness alone.
        slow = health.WatchedQueue("postgresql://h/db", opener=lambda u, c: flaky, read_wait_seconds=0.2)  # type: ignore[arg-type,return-value]
        assert slow.counts() == {"PENDING": 7}
        flaky.slow, flaky.pending = 1.0, 8
        assert slow.counts() == {"PENDING": 7}
        assert "no answer within" in slow.status().reason
        assert slow.resubmit_many(where=None) == []
        flaky.slow = 0.0
        wait_for(lambda: slow.status().stale_since is None, 10, "the late answer")
        assert slow.counts() == {"PENDING": 8}
        slow.close()
    finally:
        q.close()


def test_app_url_adds_a_short_wait_for_a_lock_unless_the_url_sets_one() -> None:
    assert health.app_url("sqlite:///data/queue.db") == "sqlite:///data/queue.db?busy_timeout=2000"
    assert health.app_url("sqlite:///q.db?synchronous=NORMAL") == "sqlite:///q.db?synchronous=NORMAL&busy_timeout=2000"
    assert health.app_url("sqlite:///q.db?busy_timeout=50") == "sqlite:///q.db?busy_timeout=50"
    assert health.app_url("postgresql://h/db") == "postgresql://h/db?lock_timeout=2000"
    assert health.app_url("postgres://h/db?schema=mail") == "postgres://h/db?schema=mail&lock_timeout=2000"
    assert health.app_url("postgresql://h/db?lock_timeout=500") == "postgresql://h/db?lock_timeout=500"
    # A transaction pooler refuses session settings: nothing added (the URL would be refused).
    assert health.app_url("postgresql://h/db?pooler=transaction") == "postgresql://h/db?pooler=transaction"


def test_every_queue_read_the_apps_make_is_remembered_for_a_stale_page() -> None:
    """A read the apps make but ``READS`` lacks would run as an action: refused while the database
    is down, so the page would show an error instead of its last figures. ``READS`` is the methods
    marked ``@read`` on ``Queue`` (a new read needs only its mark)."""
    import re
    from pathlib import Path

    import jobq.web

    actions = {
        "cancel_many", "enqueue", "move_many", "pause", "pause_schedule", "resubmit_many", "resume", "resume_schedule"
    }  # fmt: skip
    sources = Path(jobq.web.__file__).parent.glob("*.py")
    called = {name for path in sources for name in re.findall(r"\bq\.([a-z_]+)\(", path.read_text())}
    called -= {"status", "wall_time"}  # WatchedQueue's own (wall_time reads nothing)
    assert called - actions <= health.READS, sorted(called - actions - health.READS)
    assert not actions & health.READS
    assert read_methods() == health.READS


#: Every ``@read`` Queue method, called: a method marked (or unmarked) without an entry here fails.
_BOUNDS = HistogramBounds((1.0,), (1.0,), (1.0,))
READ_CALLS: dict[str, Callable[[Queue, int], object]] = {
    "get": lambda q, i: q.get(i),
    "events": lambda q, i: q.events(i),
    "recent_events": lambda q, i: q.recent_events(),
    "list_jobs": lambda q, i: q.list_jobs(),
    "list": lambda q, i: q.list(),
    "count": lambda q, i: q.count(),
    "list_page": lambda q, i: q.list_page(),
    "counts": lambda q, i: q.counts(),
    "stats": lambda q, i: q.stats(),
    "latest": lambda q, i: q.latest(),
    "history": lambda q, i: q.history(),
    "due_history": lambda q, i: q.due_history(),
    "workers": lambda q, i: q.workers(),
    "blockers": lambda q, i: q.blockers(),
    "progress_of": lambda q, i: q.progress_of([i]),
    "trace_contexts": lambda q, i: q.trace_contexts([i]),
    "queue_gauges": lambda q, i: q.queue_gauges(),
    "last_event_id": lambda q, i: q.last_event_id(),
    "events_after": lambda q, i: q.events_after(0),
    "completion_cursor": lambda q, i: q.completion_cursor(),
    "completions_after": lambda q, i: q.completions_after((0.0, 0)),
    "last_job_id": lambda q, i: q.last_job_id(),
    "enqueue_totals": lambda q, i: q.enqueue_totals(0),
    "event_totals": lambda q, i: q.event_totals(0, ["cancelled"]),
    "completion_totals": lambda q, i: q.completion_totals((0.0, 0), _BOUNDS),
    "schedules": lambda q, i: q.schedules(),
    "schedule_history": lambda q, i: q.schedule_history(),
    "controls": lambda q, i: q.controls(),
    "control_history": lambda q, i: q.control_history(),
    "next_due_at": lambda q, i: q.next_due_at(),
    "newest_write": lambda q, i: q.newest_write(),
}


def test_a_marked_read_writes_nothing(tmp_path: Path) -> None:
    """What the apps show again while the database is down must be a read: every ``@read`` method
    runs on a real SQLite file and no commit changes it (``PRAGMA data_version``, as another
    connection sees it, moves with every commit of another connection)."""
    import apsw

    assert set(READ_CALLS) == read_methods()
    url = _db(tmp_path / "queue.db", 3)
    with Queue(url) as q:
        job = q.claim("w1")
        assert job is not None
        q.progress(job, 0.5, "half")
        q.pause("other")
        watcher = apsw.Connection(str(tmp_path / "queue.db"))
        try:

            def version() -> int:
                return int(watcher.execute("PRAGMA data_version").fetchall()[0][0])

            before = version()
            q.complete(job)
            assert version() != before  # the check sees a write
            before = version()
            for name, call in READ_CALLS.items():
                call(q, job.id)
                assert version() == before, f"Queue.{name} is marked @read but committed a change"
        finally:
            watcher.close()
