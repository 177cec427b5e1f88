"""Many processes opening one new SQLite database at the same moment: each one switches it to WAL
and migrates it; none may fail with "database is locked" (SQLite can answer the journal-mode
switch with SQLITE_BUSY at once, without calling the busy handler)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from children import start_lock_holder, stop_lock_holder, stopped, wait_locked
from polling import wait_for

import jobq
from jobq.backends.sqlite.holders import HOLD_PROBE_SECONDS

OPENERS = 12
# Two rounds: the race below is the whole path end to end; the WAL switch's SQLITE_BUSY at once,
# which five rounds used to meet only by chance, is made on purpose by the test after it.
ROUNDS = 2

OPEN = """
import os, sys, time
start = float(sys.argv[2])
while time.time() < start:
    pass  # spin to the common start: the opens must overlap
import jobq
with jobq.Queue(sys.argv[1]) as q:
    for n in range(40):  # writers already at work while later openers arrive
        q.enqueue({"n": n})
"""


def test_processes_opening_a_new_database_together_all_succeed(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path}/round{round_}/queue.db"
        start = time.time() + 1.5  # after every interpreter has started
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN, url, repr(start + i * 0.02)],  # staggered: opens meet writes
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for i in range(OPENERS)
        ]
        try:
            wait_for(lambda procs=procs: all(p.poll() is not None for p in procs), 120, "the openers to exit")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        failures = [p.stdout.read().decode()[-300:] for p in procs if p.returncode != 0 and p.stdout]
        assert failures == [], failures
        for p in procs:
            if p.stdout:
                p.stdout.close()


def test_a_new_file_switched_to_wal_while_another_connection_holds_its_reserved_lock_opens_once_it_is_let_go(
    tmp_path: Path,
) -> None:
    """The switch's SQLITE_BUSY at once, made on purpose: on a file not yet in WAL mode, another
    process's RESERVED lock (BEGIN IMMEDIATE) makes ``PRAGMA journal_mode = WAL`` fail at once,
    whatever the busy timeout (measured: 0.0 s, where an EXCLUSIVE holder is waited for). The
    race of the test above hits this only now and then; here every open meets it."""
    path = tmp_path / "queue.db"
    path.touch()  # a new, empty file: rollback-journal mode until an open switches it
    holder = start_lock_holder(path)  # another process's BEGIN IMMEDIATE
    letting_go = threading.Event()

    def _let_go() -> None:
        letting_go.set()
        stop_lock_holder(holder)

    let_go = threading.Timer(0.3, _let_go)  # the lock held for 0.3 s
    try:
        wait_locked(holder)
        let_go.start()
        with jobq.Queue(f"sqlite:///{path}") as q:
            assert q.enqueue({"n": 1}) == 1
        assert letting_go.is_set(), "the open went ahead while the lock was still held"
    finally:
        let_go.cancel()
        if let_go.ident is not None:
            let_go.join()
        stop_lock_holder(holder)
    with jobq.Queue(f"sqlite:///{path}") as q:
        assert [job.payload for job in q.latest()] == [{"n": 1}]


@contextlib.contextmanager
def _write_lock_held(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A queue of one job at ``path``, and a process of ours holding its write lock meanwhile."""
    with jobq.Queue(f"sqlite:///{path}") as q:
        q.enqueue({"n": 0})
    holder = start_lock_holder(path)
    try:
        wait_locked(holder)
        yield holder
    finally:
        stop_lock_holder(holder)


def test_an_up_to_date_database_opens_under_another_writer_and_busy_timeout_bounds_a_write(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with _write_lock_held(path) as holder:
        # busy_timeout=0: any wait for the lock would fail at once, so opening takes none.
        with jobq.Queue(f"sqlite:///{path}?busy_timeout=0") as q:
            assert q.counts()["PENDING"] == 1
        # The holder named (from /proc/locks): the operator can end it, nothing else can.
        held = rf"stayed locked for 0\.3 s \(process pid {holder.pid} \(\S+ -c .*\) holds its write lock\)"
        locked = pytest.raises(jobq.StorageError, match=held)
        with jobq.Queue(f"sqlite:///{path}?busy_timeout=300") as q, locked:
            q.enqueue({"n": 1})  # without the bound: 0.3 s, then retries for 120 s
    with jobq.Queue(f"sqlite:///{path}") as q:
        assert q.counts()["PENDING"] == 1


def test_a_write_waiting_long_for_a_held_lock_says_once_who_holds_it_and_then_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """By default a write waits up to LOCKED_GIVE_UP_SECONDS (120 s) for the lock: behind an open
    ``sqlite3`` shell or a frozen process, `jobq retry 5` hung for two minutes without a word."""
    import jobq.backends.sqlite as sqlite_backend

    # The default's shape, shortened: SQLite's busy handler gives up after 0.2 s, the notice is due
    # after 0.3 s of waiting, and the write goes on waiting (no busy_timeout in the URL).
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_MS_DEFAULT", 200)
    monkeypatch.setattr(sqlite_backend, "LOCK_WAIT_NOTICE_SECONDS", 0.3)
    path = tmp_path / "queue.db"
    with _write_lock_held(path) as holder, jobq.Queue(f"sqlite:///{path}") as q:
        done: list[int] = []
        writer = threading.Thread(target=lambda: done.append(q.enqueue({"n": 1})))
        with caplog.at_level(logging.WARNING, logger="jobq.sqlite"):
            writer.start()
            wait_for(lambda: caplog.records, 30, "the waiting write's notice")
            stop_lock_holder(holder)
            writer.join(30)
        assert not writer.is_alive() and len(done) == 1 and q.counts()["PENDING"] == 2
    (notice,) = caplog.records  # once, however many times the busy handler gave up meanwhile
    text = notice.getMessage()
    assert text.startswith(f"{path}: still waiting for the database's write lock after ")
    assert f"(process pid {holder.pid} (" in text and text.endswith("; giving up after 120 s")


def test_at_the_default_settings_the_notice_comes_after_the_notice_time_not_the_busy_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing shortened: the notice says the write has waited about LOCK_WAIT_NOTICE_SECONDS
    (2 s). SQLite's busy handler kept it for a busy_timeout of 10 s before, so it said 10 s."""
    import jobq.backends.sqlite as sqlite_backend

    path = tmp_path / "queue.db"
    with _write_lock_held(path) as holder, jobq.Queue(f"sqlite:///{path}") as q:
        writer = threading.Thread(target=lambda: q.enqueue({"n": 1}))
        with caplog.at_level(logging.WARNING, logger="jobq.sqlite"):
            writer.start()
            wait_for(lambda: caplog.records, 60, "the waiting write's notice")
            stop_lock_holder(holder)
            writer.join(30)
        assert not writer.is_alive() and q.counts()["PENDING"] == 2
    waited = re.search(r"still waiting for the database's write lock after (\d+) s", caplog.records[0].getMessage())
    assert waited is not None
    assert sqlite_backend.LOCK_WAIT_NOTICE_SECONDS <= int(waited[1]) < 10


def test_the_queue_names_a_holder_of_its_write_lock_that_holds_up_its_writes(tmp_path: Path) -> None:
    """``Queue.blockers`` on SQLite: a process inside a transaction left open is named once it
    held the lock ``HOLD_PROBE_SECONDS`` while nobody committed, with what to do; a stopped one
    with how to continue it; none once the lock is let go."""
    path = tmp_path / "queue.db"
    with _write_lock_held(path) as holder, jobq.Queue(f"sqlite:///{path}") as q:
        (text,) = q.blockers()
        assert text.startswith(f"pid {holder.pid} (") and "kill -CONT" not in text, text
        assert text.endswith(
            f"which has held it {HOLD_PROBE_SECONDS:g} s or more while nobody committed: every write waits "
            "for its transaction to end (one left open in a shell: commit or roll it back)"
        ), text
        assert q.blockers() == [text]  # found before, nobody committed since (holders.HeldSeen)
        # `jobq stats` says it too, as the line why jobs stand still.
        env = {**os.environ, "JOBQ_DATABASE_URL": f"sqlite:///{path}"}
        shown = subprocess.run(
            [sys.executable, "-m", "jobq.cli", "stats"], env=env, capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0 and shown.stdout.splitlines()[-1] == f"writes held up by: {text}", shown
        os.kill(holder.pid, signal.SIGSTOP)
        wait_for(lambda: stopped(holder.pid), 30, "the holder to stop")
        (text,) = q.blockers()
        assert text.startswith(f"pid {holder.pid} (") and f"kill -CONT {holder.pid}" in text
        os.kill(holder.pid, signal.SIGCONT)
        wait_for(lambda: not stopped(holder.pid), 30, "the holder to continue")
        assert holder.stdin is not None
        holder.stdin.close()  # it exits: its transaction is rolled back
        holder.wait(30)
        assert q.blockers() == []
        q.enqueue({"n": 1})  # and writes go on


#: Commits as fast as it can, holding the write lock nearly all the time, until killed.
CHURN = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("PRAGMA busy_timeout = 10000")
conn.execute("CREATE TABLE churn (n INTEGER)")
print("churning", flush=True)
while True:
    conn.execute("BEGIN IMMEDIATE; INSERT INTO churn VALUES (1); COMMIT")
"""


def test_a_process_that_holds_the_write_lock_but_commits_holds_up_nothing(tmp_path: Path) -> None:
    """A writer that commits in a loop holds the lock at nearly every look, but lets it go
    between its transactions: the commits (SQLite's data_version) clear it at once."""
    path = tmp_path / "queue.db"
    with jobq.Queue(f"sqlite:///{path}") as q:
        q.enqueue({"n": 0})
        churn = subprocess.Popen([sys.executable, "-c", CHURN, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert churn.stdout is not None and churn.stdout.readline().strip() == "churning"
            for _ in range(5):
                assert q.blockers() == []
            assert churn.poll() is None  # it churned throughout
        finally:
            stop_lock_holder(churn)


def test_a_write_behind_a_transaction_of_this_process_names_this_process(tmp_path: Path) -> None:
    """An application's own transaction (its apsw connection) and a jobq call inside it that did
    not pass ``conn``: the call waits for that very transaction. The kernel lists this process as
    the lock's holder (POSIX locks never conflict within a process), and the error said "another
    process holds its write lock", sending the operator to look for one."""
    import apsw

    path = tmp_path / "queue.db"
    with jobq.Queue(f"sqlite:///{path}?busy_timeout=300") as q:
        q.enqueue({"n": 0})
        app = apsw.Connection(str(path))
        try:
            app.execute("BEGIN IMMEDIATE")
            app.execute("UPDATE jobs SET priority = 1")
            held = rf"stayed locked for 0\.3 s \(this process \(pid {os.getpid()}\) holds its write lock itself"
            with pytest.raises(jobq.StorageError, match=held) as raised:
                q.enqueue({"n": 1})
            assert "pass conn= to each jobq call" in str(raised.value)
            app.execute("ROLLBACK")
        finally:
            app.close()
        assert q.counts()["PENDING"] == 1


def _open_files(path: Path) -> int:
    """How many of this process's file descriptors are the file at ``path``."""
    wanted = path.stat()
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            st = fd.stat()
        except OSError:
            continue
        count += (st.st_dev, st.st_ino) == (wanted.st_dev, wanted.st_ino)
    return count


@pytest.mark.parametrize("case", ["newer schema", "no jobq tables", "not a database"])
def test_a_queue_that_fails_to_open_leaves_its_file_closed(tmp_path: Path, case: str) -> None:
    """The connection of a failed open was left open (with its read lock) until collected: a
    restore in this process then found the queue open, and another process's restore saw a lock."""
    import apsw

    db = tmp_path / "queue.db"
    if case == "not a database":
        db.write_bytes(b"not sqlite" * 500)
    else:
        conn = apsw.Connection(str(db))
        conn.execute("CREATE TABLE notes (x)")
        if case == "newer schema":
            jobq.Queue(f"sqlite:///{db}").close()
            conn.execute("INSERT INTO jobq_schema (version, applied_at) VALUES (999, 0)")
        conn.close()
    # Another program's tables are jobq's to add to when it may create (an application's own
    # database); a viewer (create=False) refuses them.
    for create in (False,) if case == "no jobq tables" else (True, False):
        with pytest.raises(jobq.StorageError):
            jobq.Queue(f"sqlite:///{db}", create=create)
        assert _open_files(db) == 0
