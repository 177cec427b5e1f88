"""``jobq backup`` and ``jobq restore`` (SQLite): a copy taken while workers run is one commit's
queue, whole and private; a restore never runs under a process that has the queue open, keeps the
file it replaces, and never lets an id be handed out twice (the demo's ``job=<id>`` stamps would
take a new job for one already done)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import apsw
import pytest
from cli_errors import JOBQ, one_line_error, run_jobq, without_jobq_settings
from handwritten import write_by_hand
from killed_writer import commit_then_die
from polling import wait_for
from processes import Procs, effects

import jobq
import jobq.backends.sqlite as sqlite_backend
from jobq.backends.sqlite.copies import holder


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = apsw.Connection(f"file:{db}?mode=ro&immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def _completed(db: Path) -> set[int]:
    return {int(r[0]) for r in _rows(db, "SELECT id FROM jobs WHERE status = 'COMPLETED'")}  # type: ignore[call-overload]


def test_backups_taken_while_workers_run_are_whole_private_and_restore_to_a_queue_that_finishes(
    tmp_path: Path, procs: Procs
) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"n": i} for i in range(3000)], task="count")
        for _ in range(2):
            procs.start("worker", "--db", url, "--batch", "1", "--lease", "2")
        wait_for(lambda: q.counts()["COMPLETED"] >= 20, what="the workers to start")
        backups = []
        for i in range(4):
            copy = q.backup(tmp_path / f"b{i}.db")
            backups.append(Path(copy.path))
            assert copy.jobs == 3000 and copy.newest_id == ids[-1]
            assert os.stat(copy.path).st_mode & 0o777 == 0o600
        assert q.counts()["COMPLETED"] < 3000, "the backups were not taken while the workers ran"
    done_before: set[int] = set()
    for b in backups:
        assert _rows(b, "PRAGMA integrity_check") == [("ok",)]
        assert not any(b.parent.glob(f"{b.name}.tmp-*")) and not Path(f"{b}-wal").exists()
        done = _completed(b)
        assert done_before <= done, "a later backup lost completions an earlier one had"
        assert done <= set(effects(tmp_path)), "a copy holds a completion no worker made"
        done_before = done
    procs.stop_all()
    with jobq.Queue(url) as q:
        done_at_stop = q.counts()["COMPLETED"]

    # The first backup put back, with nothing running: the jobs still open in it run again (its
    # PROCESSING ones once their leases are found expired), and ids go on above the replaced queue's.
    restored = jobq.restore(backups[0], url)
    assert restored.ids_above == ids[-1] and restored.replaced is not None
    assert _rows(Path(restored.replaced), "SELECT count(*) FROM jobs WHERE status = 'COMPLETED'") == [(done_at_stop,)]
    with jobq.Queue(url) as q:
        assert q.enqueue({"after": "restore"}) == ids[-1] + 1
        procs.start("worker", "--db", url, "--batch", "8", "--lease", "1")
        wait_for(lambda: q.counts()["COMPLETED"] == 3001, timeout=120, what="the restored queue to finish")


def test_a_backup_never_overwrites_a_file_and_leaves_nothing_when_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    taken = tmp_path / "taken.db"
    taken.write_text("someone's file")
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        with pytest.raises(jobq.StorageError, match="exists: a backup never overwrites"):
            q.backup(taken)
        with pytest.raises(jobq.StorageError, match="cannot write"):
            q.backup(tmp_path / "no-such-dir" / "b.db")
        with pytest.raises(ValueError, match="file name"):
            q.backup("")
    assert taken.read_text() == "someone's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.db", "taken.db"]


def test_a_backup_killed_at_any_moment_leaves_no_file_or_a_whole_one(tmp_path: Path) -> None:
    """``jobq backup`` of ~20 MB SIGKILLed at random moments: the backup's name never shows a
    partial copy (it is linked to its name once written, checked and synced)."""
    db = tmp_path / "queue.db"
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue_many([{"pad": "x" * 2000, "n": i} for i in range(8000)])
    rng = random.Random(7)
    whole = 0
    for i in range(8):
        dest = tmp_path / f"b{i}.db"
        proc = subprocess.Popen(
            [str(JOBQ), "--db", f"sqlite:///{db}", "backup", str(dest)], env=without_jobq_settings(), cwd=tmp_path
        )
        try:
            proc.wait(rng.uniform(0.05, 0.6))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        if dest.exists():
            whole += 1
            assert _rows(dest, "PRAGMA integrity_check") == [("ok",)]
            assert _rows(dest, "SELECT count(*) FROM jobs") == [(8000,)]
    assert whole < 8, "no backup was killed: the kills came too late"
    # What the killed ones left, once old enough, goes with the next backup to the same name.
    for left in tmp_path.glob("b*.db.tmp-*"):
        os.utime(left, (0, 0))
    for i in range(8):
        if not (tmp_path / f"b{i}.db").exists():
            assert run_jobq("--db", f"sqlite:///{db}", "backup", f"b{i}.db", cwd=tmp_path).returncode == 0
    assert not list(tmp_path.glob("b*.db.tmp-*"))


_HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", os.getpid(), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(("kind", "namespace"), [("backup", False), ("restore", False), ("backup", True)])
def test_what_a_killed_backup_or_restore_left_goes_with_the_next_one_and_a_live_ones_stays(
    tmp_path: Path, kind: str, namespace: bool
) -> None:
    """Temporary files beside the target: one left by a killed process (old, locked by none) is
    removed with its -wal; a live one's (its maker holds an ``flock``, also from another PID
    namespace, where its pid may be ours: ``namespace`` runs the holder in a real one, as pid 1),
    one just made, and other names stay."""
    wrap: list[str] = []
    if namespace:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare(1): creating a PID namespace is privileged")
        # --kill-child: killing unshare (by its pid) kills the holder inside with it.
        wrap = [str(shutil.which("unshare")), "--pid", "--fork", "--kill-child"]
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(3)])
        q.backup(tmp_path / "first.db")
    target, infix = (tmp_path / "b.db", "tmp") if kind == "backup" else (db, "restore")
    left, live, young, other = (
        Path(f"{target}.{infix}-{name}") for name in ("4242-0a1b2c3d", f"{os.getpid()}-99999999", "77-ffffffff", "x")
    )
    for path in (left, Path(f"{left}-wal"), live, young, other):
        path.write_bytes(b"litter")
    for path in (left, Path(f"{left}-wal"), live, other):
        os.utime(path, (0, 0))
    holder_proc = subprocess.Popen(
        [*wrap, sys.executable, "-c", _HOLD_FLOCK, str(live)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder_proc.stdout is not None
        held, inner_pid = holder_proc.stdout.readline().split()
        assert held == "held" and (int(inner_pid) == 1) == namespace  # pid 1: its own PID namespace
        if kind == "backup":
            with jobq.Queue(url) as q:
                q.backup(target)
        else:
            jobq.restore(tmp_path / "first.db", url)
        assert not left.exists() and not Path(f"{left}-wal").exists()
        assert live.read_bytes() == young.read_bytes() == other.read_bytes() == b"litter"
    finally:
        holder_proc.kill()
        holder_proc.wait(10)
        if holder_proc.stdout is not None:
            holder_proc.stdout.close()


def test_restore_refuses_while_a_process_has_the_queue_open(tmp_path: Path, procs: Procs) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        q.backup(tmp_path / "b.db")
        q.enqueue({"n": 2})
        with pytest.raises(jobq.StorageError, match="open in this process"):
            jobq.restore(tmp_path / "b.db", url)
    worker = procs.start("worker", "--db", url)
    wait_for(lambda: holder(str(db)) is not None, what="the worker to open the queue")
    inode = db.stat().st_ino
    refused = run_jobq("--db", url, "restore", str(tmp_path / "b.db"), cwd=tmp_path)
    line = one_line_error(refused, "stop every process")
    assert f"process {worker.pid}" in line
    assert db.stat().st_ino == inode and not list(tmp_path.glob("queue.db.re*"))
    procs.stop_all()
    done = run_jobq("--db", url, "restore", str(tmp_path / "b.db"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "new jobs get ids above 2" in done.stdout and "kept as" in done.stdout
    with jobq.Queue(url) as q:
        assert q.count() == 1 and q.enqueue({"n": 3}) == 3


def test_restore_takes_the_newest_id_from_a_wal_left_by_a_killed_writer_and_keeps_it(tmp_path: Path) -> None:
    """The replaced queue's last commits live only in the -wal of a writer that was killed: they
    count for the ids, and the replaced file kept beside the restored one holds them."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(5)])
        q.backup(tmp_path / "b.db")
    commit_then_die(url, "q.enqueue_many([{'late': i} for i in range(7)])")
    assert Path(f"{db}-wal").exists()
    restored = jobq.restore(tmp_path / "b.db", url)
    assert restored.ids_above == 12 and restored.jobs == 5
    assert restored.replaced is not None
    with jobq.Queue(f"sqlite:///{restored.replaced}") as kept:
        assert kept.count() == 12
    with jobq.Queue(url) as q:
        assert q.enqueue({"n": "new"}) == 13


def test_restore_over_a_damaged_queue_sets_it_aside_and_warns_about_ids(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        q.backup(tmp_path / "b.db")
    garbage = b"not a database, whatever it was" * 100
    db.write_bytes(garbage)
    done = run_jobq("--db", url, "restore", str(tmp_path / "b.db"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("jobq: warning: the replaced queue could not be read")
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("queue.db.replaced-")]
    assert len(kept) == 1 and kept[0].read_bytes() == garbage
    with jobq.Queue(url) as q:
        assert [j.payload for j in q.list_jobs()] == [{"n": 1}]


def test_restore_refuses_what_is_no_backup_and_another_programs_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        q.backup(tmp_path / "b.db")
    (tmp_path / "notes.txt").write_text("hello")
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    cases = [
        (("--db", url, "restore", "missing.db"), "no backup"),
        (("--db", url, "restore", "notes.txt"), "not a sqlite database"),
        (("--db", url, "restore", str(other)), "no jobq queue"),
        (("--db", url, "restore", str(tmp_path / "queue.db")), "the queue itself"),
        (("--db", f"sqlite:///{other}", "restore", "b.db"), "another program's tables"),
        (("--db", url, "restore", ""), "file name"),
        (("--db", url, "backup", "b.db"), "exists"),
    ]
    for args, words in cases:
        one_line_error(run_jobq(*args, cwd=tmp_path), words)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_backup_and_restore_on_postgresql_say_which_tools_copy_a_server(postgres_url: str, tmp_path: Path) -> None:
    with jobq.Queue(postgres_url) as q, pytest.raises(jobq.StorageError, match="pg_dump"):
        q.backup(tmp_path / "b.db")
    for command in ("backup", "restore"):
        refused = run_jobq("--db", postgres_url, command, "b.db", cwd=tmp_path)
        one_line_error(refused, "pg_dump")
    assert not list(tmp_path.iterdir())


def test_backup_and_restore_refuse_a_postgresql_url_before_connecting(tmp_path: Path) -> None:
    """No server listens on port 1: a refusal that connected first would name the connection."""
    url = "postgresql://nobody:secret@127.0.0.1:1/nothing"
    for call in (lambda: jobq.backup(tmp_path / "b.db", url), lambda: jobq.restore(tmp_path / "b.db", url)):
        with pytest.raises(jobq.StorageError, match="pg_dump"):
            call()
    for command in ("backup", "restore"):
        one_line_error(run_jobq("--db", url, command, "b.db", cwd=tmp_path), "pg_dump")
    assert not list(tmp_path.iterdir())


def test_the_cli_backup_says_what_it_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(3)])
    done = run_jobq("--db", url, "backup", "copy.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backed up 3 jobs (newest id 3) to {tmp_path / 'copy.db'} (")
    assert "keep it private" in done.stdout
    as_json = run_jobq("--db", url, "backup", "--json", "copy2.db", cwd=tmp_path)
    assert '"jobs": 3' in as_json.stdout and as_json.returncode == 0


def test_a_compact_backup_restored_gives_back_the_space_purged_jobs_left(tmp_path: Path) -> None:
    """A SQLite file never shrinks: after a purge its pages are free, not gone. A compact backup
    leaves them out; restored, the queue has every job it had, and its ids go on."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"pad": "x" * 500, "n": i} for i in range(6000)])
        q.cancel_many(ids=ids[:-10])
        assert q.purge(older_than=0, statuses=("CANCELLED",)) == 5990
        full = q.backup(tmp_path / "full.db")
        compact = q.backup(tmp_path / "compact.db", compact=True)
        kept = [(j.id, j.payload) for j in q.list_jobs()]
    assert os.path.getsize(db) == full.size_bytes > 3_000_000
    assert compact.size_bytes < full.size_bytes / 10
    assert (compact.jobs, compact.newest_id) == (full.jobs, full.newest_id) == (10, ids[-1])
    assert os.stat(compact.path).st_mode & 0o777 == 0o600
    assert _rows(Path(compact.path), "PRAGMA integrity_check") == [("ok",)]
    jobq.restore(compact.path, url)
    assert os.path.getsize(db) == compact.size_bytes
    with jobq.Queue(url) as q:
        assert [(j.id, j.payload) for j in q.list_jobs()] == kept
        assert q.enqueue({"n": "next"}) == ids[-1] + 1
    done = run_jobq("--db", url, "backup", "--compact", "again.db", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("backed up 11 jobs"), done.stderr


def test_restore_in_another_pid_namespace_refuses_while_a_process_outside_it_has_the_queue_open(
    tmp_path: Path, procs: Procs
) -> None:
    """Two containers of one pod share the data volume but not the process table: a restore run
    in one while a worker of the other has the queue open sees the lock, but no pid (0)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1): creating a PID namespace is privileged")
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        q.backup(tmp_path / "b.db")
    procs.start("worker", "--db", url)
    wait_for(lambda: holder(str(db)) is not None, what="the worker to open the queue")
    inside = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", str(JOBQ), "--db", url, "restore", "b.db"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=without_jobq_settings(),
    )
    one_line_error(inside, "a process in another container")
    assert not list(tmp_path.glob("queue.db.re*"))


def test_the_seed_s_files_are_stamped_once_across_a_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's exactly-once, across a restore: the jobs a backup holds keep their ids, so those
    that ran after it find their stamps and do not stamp again; a job made after the restore gets
    a new id, so a file stamped by a job the restore lost is not taken for its own (with the id
    handed out again, its stamp would be found and its effect would never land)."""
    from jobq.demo.consumer import make_stamp_handler
    from jobq.demo.files import FILE_TASK
    from jobq.demo.stamps import stamps_in
    from jobq.worker import Worker

    monkeypatch.chdir(tmp_path)
    files = tmp_path / "data" / "files"
    files.mkdir(parents=True)
    for name in "abcde":
        (files / f"{name}.txt").write_text(f"file {name}\n")
    s = jobq.Settings(database_url=f"sqlite:///{tmp_path}/queue.db", data_dir="data", consumer_delay="0-0")

    def run_worker(q: jobq.Queue) -> None:
        Worker(q, {FILE_TASK: make_stamp_handler(s)}, exit_when_idle=True).run()

    with jobq.Queue(settings=s) as q:
        first = [q.enqueue({"path": f"data/files/{n}.txt"}, task=FILE_TASK) for n in "abcd"]
        q.backup(tmp_path / "b.db")
        run_worker(q)
        lost = q.enqueue({"path": "data/files/e.txt"}, task=FILE_TASK)  # made after the backup
        run_worker(q)
        assert all(q.get(i).status == jobq.JobStatus.COMPLETED for i in [*first, lost])
    jobq.restore(tmp_path / "b.db", settings=s)
    with jobq.Queue(settings=s) as q:
        run_worker(q)  # the backup's four jobs run again
        assert [q.get(i).result for i in first] == [{"stamped": False}] * 4
        again = q.enqueue({"path": "data/files/e.txt"}, task=FILE_TASK)
        run_worker(q)
        assert again > lost and q.get(again).result == {"stamped": True}
    for name, job in zip("abcd", first, strict=True):
        assert stamps_in((files / f"{name}.txt").read_bytes()) == [(job, 1)]
    assert stamps_in((files / "e.txt").read_bytes()) == [(lost, 1), (again, 1)]


def test_an_asyncqueue_backs_up_too(backend_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with jobq.AsyncQueue(backend_url) as q:
            await q.enqueue({"n": 1})
            if backend_url.startswith("postgresql"):
                with pytest.raises(jobq.StorageError, match="pg_dump"):
                    await q.backup(tmp_path / "b.db")
            else:
                copy = await q.backup(tmp_path / "b.db", compact=True)
                assert (copy.jobs, copy.newest_id) == (1, 1)

    asyncio.run(main())


def test_restore_over_a_queue_this_jobq_cannot_open_still_reads_its_newest_id(tmp_path: Path) -> None:
    """A queue made by a newer jobq (its schema version above this one's) is not migrated, nor
    opened: its newest id is read as it stands, the id floor of its deleted newest jobs included."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(3)])
        q.backup(tmp_path / "b.db")
        q.enqueue_many([{"n": i} for i in range(7)])  # ids 4-10
    conn = apsw.Connection(str(db))
    conn.execute("DELETE FROM jobs WHERE id > 5")  # the trigger keeps 10 as the floor
    conn.execute("INSERT INTO jobq_schema (version, applied_at) VALUES (999, 0)")
    conn.close()
    with pytest.raises(jobq.StorageError, match="newer than this jobq"):
        jobq.Queue(url).close()
    restored = jobq.restore(tmp_path / "b.db", url)
    assert restored.ids_above == 10 and restored.jobs == 3
    assert restored.replaced is not None
    assert _rows(Path(restored.replaced), "SELECT max(version) FROM jobq_schema") == [(999,)]
    with jobq.Queue(url) as q:
        assert q.enqueue({"n": "new"}) == 11


def test_a_backup_made_by_an_older_jobq_is_restored_at_this_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup of schema 13 (before the jobs table was rebuilt without AUTOINCREMENT) is brought
    to this jobq's schema by the restore, its rows and ids kept; the backup file is not written."""
    current = sqlite_backend.MIGRATIONS
    old_url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", current[:13])
    with jobq.Queue(old_url) as old:
        # Inserted as the jobq of schema 13 did: AUTOINCREMENT picks the ids.
        insert = "INSERT INTO jobs (payload, run_at, created_at, updated_at) VALUES "
        write_by_hand(old_url, *(insert + f"('{{\"n\": {i}}}', 0, 0, 0)" for i in range(4)))
        old.backup(tmp_path / "b13.db")
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", current)
    before = (tmp_path / "b13.db").read_bytes()
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    restored = jobq.restore(tmp_path / "b13.db", url)
    assert (restored.jobs, restored.newest_id, restored.replaced) == (4, 4, None)
    assert (tmp_path / "b13.db").read_bytes() == before
    assert _rows(tmp_path / "queue.db", "SELECT max(version) FROM jobq_schema") == [(len(current),)]
    with jobq.Queue(url) as q:
        assert [j.payload for j in q.list_jobs(page=jobq.Page(sort="id", descending=False))] == [
            {"n": i} for i in range(4)
        ]
        assert q.enqueue({"n": "new"}) == 5


def test_a_backup_holds_up_no_other_call_of_its_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of gigabytes takes seconds: meanwhile the same process's other calls (a worker's
    heartbeats, the apps' other pages) go on. Checked from inside the copy: another thread's call
    returns before the copy goes on."""
    from jobq.backends.sqlite import copies

    answered: list[int] = []
    in_time: list[list[int]] = []
    copy_pages = copies._copy

    def copy_after_another_call(*args: object) -> None:
        other = threading.Thread(target=lambda: answered.append(q.count()), daemon=True)
        other.start()
        other.join(10)
        in_time.append(list(answered))  # what had come back while the copy waited
        copy_pages(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(copies, "_copy", copy_after_another_call)
    with jobq.Queue(f"sqlite:///{tmp_path / 'queue.db'}") as q:
        q.enqueue_many([{"n": i} for i in range(5)])
        assert q.backup(tmp_path / "b.db").jobs == 5
    assert in_time == [[5]]


#: A process opening the queue: it says so when its first read finds the file locked.
OPENS_DURING_THE_RESTORE = """
import sys, time, jobq
import jobq.backends.sqlite as sqlite_backend
first_read = sqlite_backend._journal_mode_wal
def announced(conn):
    def wait(tries):
        if tries == 0:
            print("its first read waits", flush=True)
        time.sleep(0.005)
        return True
    conn.set_busy_handler(wait)
    try:
        return first_read(conn)
    finally:
        conn.set_busy_timeout(10_000)
sqlite_backend._journal_mode_wal = announced
with jobq.Queue(sys.argv[1]) as q:
    print(q.enqueue({"after": "the restore"}), flush=True)
"""


def test_a_process_that_opens_the_queue_during_a_restore_goes_on_with_the_restored_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer started while the restore puts the copy in place: it opened the old file, and its
    first read waits, since the restore keeps every reader out until the copy has the name. The
    producer then finds its file replaced and opens the restored one. Its job is neither lost in
    the file set aside nor written into the restored file's -wal as pages of the old file."""
    from jobq.backends.sqlite import copies

    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(3)])
        q.backup(tmp_path / "b.db")
        q.enqueue_many([{"n": i} for i in range(4)])  # ids 4-7, gone with the restore
    started: list[subprocess.Popen[str]] = []
    set_aside = copies._set_aside

    def set_aside_while_one_opens(path: str, now: float) -> str:
        opener = subprocess.Popen(
            [sys.executable, "-c", OPENS_DURING_THE_RESTORE, url], stdout=subprocess.PIPE, text=True
        )
        started.append(opener)
        assert opener.stdout is not None and opener.stdout.readline() == "its first read waits\n"
        return set_aside(path, now)

    monkeypatch.setattr(copies, "_set_aside", set_aside_while_one_opens)
    try:
        restored = jobq.restore(tmp_path / "b.db", url)
        out, _ = started[0].communicate(timeout=60)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert started[0].returncode == 0
    new_id = int(out.splitlines()[-1])
    assert restored.ids_above == 7 and new_id == 8
    assert restored.replaced is not None
    assert _rows(Path(restored.replaced), "SELECT count(*) FROM jobs") == [(7,)]
    with jobq.Queue(url) as q:
        assert q.get(new_id).payload == {"after": "the restore"} and q.count() == 4


def test_jobs_made_after_the_restore_read_the_newest_id_keep_their_ids_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that enqueues after the restore read the queue's newest id, and exits before
    the restore shuts the file: the restore reads the newest id again once nobody can write, and
    new jobs go above that one too."""
    from jobq.backends.sqlite import copies

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        q.backup(tmp_path / "b.db")
    newest_id_used = copies._newest_id_used

    def then_a_producer_comes_and_goes(path: str) -> int | None:
        found = newest_id_used(path)
        with jobq.Queue(url) as producer:
            assert producer.enqueue({"n": "meanwhile"}) == 2
        return found

    monkeypatch.setattr(copies, "_newest_id_used", then_a_producer_comes_and_goes)
    restored = jobq.restore(tmp_path / "b.db", url)
    assert restored.ids_above == 2 and restored.replaced is not None
    assert _rows(Path(restored.replaced), "SELECT count(*) FROM jobs") == [(2,)]
    with jobq.Queue(url) as q:
        assert q.count() == 1 and q.enqueue({"n": "new"}) == 3


def test_a_wal_left_during_the_restore_stops_it_and_replaces_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer killed between the restore's read of the newest id and its lock leaves commits in
    a -wal, which only a reader with locks sees: the restore refuses, and changes nothing."""
    from jobq.backends.sqlite import copies

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        q.backup(tmp_path / "b.db")
    sync = copies._sync

    def then_a_writer_dies(tmp: str) -> None:  # the copy synced, right before the lock
        sync(tmp)
        commit_then_die(url, "q.enqueue({'n': 'in the wal'})")

    monkeypatch.setattr(copies, "_sync", then_a_writer_dies)
    with pytest.raises(jobq.StorageError, match="was written during the restore"):
        jobq.restore(tmp_path / "b.db", url)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("-shm")) == [
        "b.db",
        "queue.db",
        "queue.db-wal",
    ]
    with jobq.Queue(url) as q:
        assert q.count() == 2
