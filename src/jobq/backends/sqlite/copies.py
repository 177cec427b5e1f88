"""Back up and restore a SQLite queue (``Queue.backup``, ``jobq.restore``; ``jobq backup`` and
``jobq restore`` at the CLI).

A backup is SQLite's online backup of the queue as it stood at one commit, read in one read
transaction: producers and workers go on meanwhile (a WAL reader blocks no writer). It is written
to a temporary file beside the target, checked (``quick_check``), synced, and then linked to its
name, so a backup file is either whole or absent, and never overwrites a file.

A restore puts such a copy in place of the queue, and
- refuses while any process has the queue open: SQLite keeps the file it opened, so those
  processes would go on writing the replaced one, and their -wal would be read as part of the
  restored file. From its last check to the rename it keeps every reader out (``shut``): a jobq
  process that opened the file meanwhile waits at its first read, then finds the file replaced
  and opens the new one (``SqliteBackend._open_writable``);
- keeps the replaced file beside it (``<db>.replaced-<UTC time>``, with its -wal if it had one
  that could not be folded in): nothing stored is lost;
- raises the restored queue's id floor to the newest id the replaced queue had handed out, so
  that the ids of jobs made after the backup are never handed out again (an effect keyed by job
  id, such as the demo's ``job=<id>`` stamp, would take a new job for one already done);
- migrates a copy made by an older jobq, and never writes the backup file itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import glob
import os
import re
import secrets
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import apsw

from jobq.backends.base import QueueCopy
from jobq.backends.sqlite import (
    DIALECT,
    LOCKED_GIVE_UP_SECONDS,
    SqliteBackend,
    _file_identity,
    _storage_error,
    read_only_connection,
    while_busy,
)
from jobq.errors import StorageError

T = TypeVar("T")

#: Where SQLite's unix VFS locks a database file: a connection in WAL mode holds a read lock on
#: one byte of this range from its first read until it closes (sqlite3.c, ``SHARED_FIRST``).
_SHARED_FIRST = 0x40000000 + 2
_SHARED_SIZE = 510
#: ``struct flock`` on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = "hhqqi4x"
_SIDE_FILES = ("-wal", "-shm", "-journal")
#: A temporary file left this long and locked by no process is a killed backup's or restore's,
#: and the next one beside it removes it. Its maker locks it (``flock``) right after making it:
#: the age keeps a file just made, not yet locked, from being taken for one left.
LEFT_TEMPORARY_SECONDS = 60.0


def holder(path: str) -> int | None:
    """The pid of a process that has the database at ``path`` open (0: one whose pid cannot be
    seen from here, in another PID namespace), or None when no process has.

    Call it only while this process has no connection to ``path`` open: closing the probe's
    descriptor drops every POSIX lock this process holds on the file, SQLite's included."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{path}: cannot open it: {exc.strerror}") from None
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _SHARED_FIRST, _SHARED_SIZE, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else max(pid, 0)


def open_here(path: str) -> bool:
    """Whether this process has the file at ``path`` open (a lock probe cannot tell: POSIX locks
    never conflict with the process's own)."""
    try:
        wanted = os.stat(path)
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/self/fd/{fd}")
            if (st.st_dev, st.st_ino) == (wanted.st_dev, wanted.st_ino):
                return True
    return False


def refuse_if_open(path: str) -> None:
    _refuse_if_open_here(path)
    pid = holder(path)
    if pid is not None:
        _refuse_open_in(path, pid)


def _refuse_if_open_here(path: str) -> None:
    """This process's own descriptors, which a lock probe cannot see (POSIX locks never conflict
    with the process's own)."""
    if open_here(path):
        raise StorageError(f"{path} is open in this process: close its Queue first, then restore")


def _refuse_open_in(path: str, pid: int) -> NoReturn:
    who = f"process {pid}" if pid else "a process in another container"
    raise StorageError(
        f"{path} is open in {who}: stop every process using the queue first "
        "(make stop, or supervisorctl stop all), then restore"
    )


@contextlib.contextmanager
def shut(path: str) -> Iterator[None]:
    """No other process may read the queue at ``path`` until the block ends: a write lock on the
    range of the file where every SQLite connection holds a read lock from its first read on.
    Taken only when no process holds one there (else StorageError, as ``refuse_if_open``). A jobq
    process that opened the file and has not read it yet waits at its first read, then finds the
    file replaced and opens the new one (``SqliteBackend._open_writable``). The lock is the open
    file description's (``F_OFD_SETLK``), not the process's: no descriptor this process closes on
    the same file meanwhile can drop it, as closing any would drop a POSIX lock."""
    _refuse_if_open_here(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open it to restore: {exc.strerror}") from None
    try:
        lock = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _SHARED_FIRST, _SHARED_SIZE, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise StorageError(f"{path}: cannot lock it to restore: {exc.strerror}") from None
            _, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_OFD_GETLK, lock))
            _refuse_open_in(path, pid if pid > 0 else 0)
        yield
    finally:
        os.close(fd)  # the lock goes with it


def backup(source: apsw.Connection, db_path: str, dest: str, *, compact: bool = False) -> QueueCopy:
    """Copy the queue that ``source`` (a connection to ``db_path``, held by the caller) reads to
    the new file ``dest``. ``compact``: without the free pages that purges leave (SQLite's
    ``VACUUM INTO``; the file never shrinks by itself), at the cost of writing every row and index
    anew; restored, the copy is the queue at its smallest."""
    dest = os.path.abspath(dest)
    taken = f"{dest} exists: a backup never overwrites a file (name a new one)"
    if os.path.lexists(dest):
        raise StorageError(taken)
    tmp, held = _new_private_file(dest, "tmp")
    try:
        if compact:  # into the empty private file (VACUUM INTO takes one that exists only if empty)
            _retry_busy(lambda: source.execute("VACUUM INTO ?", (tmp,)).fetchall(), db_path, dest)
        target = _open(tmp)
        try:
            if not compact:
                _copy(source, target, db_path, dest)
            jobs, newest = _checked_summary(target, db_path)
        finally:
            target.close()
        _sync(tmp)  # VACUUM INTO does not sync what it wrote either
        _link_new(tmp, dest, taken)
    finally:
        _remove(tmp)
        os.close(held)
    _sync_directory(dest)
    return QueueCopy(path=dest, jobs=jobs, newest_id=newest, size_bytes=os.path.getsize(dest))


def restore(path: str, source: str, now: float) -> QueueCopy:
    """Put the backup ``source`` in place of the queue at ``path`` (see the module's docstring)."""
    path, source = os.path.abspath(path), os.path.abspath(source)
    if not os.path.isfile(source):
        raise StorageError(f"no backup at {source}")
    if os.path.exists(path) and os.path.samefile(path, source):
        raise StorageError(f"{source} is the queue itself: name a backup to restore")
    refuse_if_open(path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp, held = _new_private_file(path, "restore")
    try:
        reader = _open_backup(source)
        target = _open(tmp)
        try:
            _copy(reader, target, source, path)
            _checked_summary(target, source)
        finally:
            target.close()
            reader.close()
        if os.path.exists(path) and _another_programs(path):
            raise StorageError(f"{path} holds no jobq queue but another program's tables: restore elsewhere")
        ids_above = _newest_id_used(path) if os.path.exists(path) else None
        there, wal = os.path.exists(path), _file_identity(f"{path}-wal")  # that -wal folded in: none
        copy = SqliteBackend(tmp, create=False)  # migrates a copy made by an older jobq
        try:
            jobs, newest = _summary(
                copy._locked(lambda c: c.execute(DIALECT.sql["copy_summary"]).fetchall()[0], write=False)
            )
        finally:
            copy.close()  # the last connection: its -wal is folded in and removed
        _sync(tmp)  # again by _raise_floor if it writes
        if not there:  # no queue there: the copy takes the name unless one appeared meanwhile
            replaced = None
            _link_new(tmp, path, f"{path}: a queue was made there during the restore")
        else:
            with shut(path):
                # Nobody can write the queue now. Jobs made since its newest id was read, by a
                # process that has exited meanwhile, are in the file (a -wal that changed: refused).
                if _file_identity(f"{path}-wal") != wal:
                    raise StorageError(
                        f"{path} was written during the restore: stop every process using the queue, then restore again"
                    )
                newest_now = _newest_id_as_it_stands(path)
                if newest_now is not None:
                    ids_above = max(ids_above or 0, newest_now)
                if ids_above:  # one write to the copy, with everything read
                    _raise_floor(tmp, ids_above)
                replaced = _set_aside(path, now)
                os.replace(tmp, path)
    finally:
        _remove(tmp)
        os.close(held)
    _sync_directory(path)
    return QueueCopy(
        path=path,
        jobs=jobs,
        newest_id=newest,
        size_bytes=os.path.getsize(path),
        ids_above=ids_above,
        replaced=replaced,
    )


def _raise_floor(tmp: str, newest: int) -> None:
    """New jobs of the copy at ``tmp`` get ids above ``newest``; synced."""
    conn = _open(tmp)
    try:
        conn.execute(DIALECT.sql["raise_id_floor"], {"id": newest})
    except apsw.Error as exc:
        raise _storage_error(exc, tmp) from None
    finally:
        conn.close()
    _sync(tmp)


def _newest_id_used(path: str) -> int | None:
    """The newest id the queue at ``path`` handed out (None: it cannot be read). Its -wal is
    folded into it when this connection, the last one, closes."""
    try:
        queue = SqliteBackend(path, create=False)
    except StorageError:
        return _newest_id_as_it_stands(path)
    try:
        return int(queue._locked(lambda c: c.execute(DIALECT.sql["newest_id_used"]).fetchall()[0][0], write=False))
    except StorageError:
        return _newest_id_as_it_stands(path)
    finally:
        queue.close()


def _another_programs(path: str) -> bool:
    """Whether ``path`` is a readable SQLite database with tables, none of them jobq's (a damaged
    queue is not: it is set aside, and the restore is what repairs it)."""
    try:
        conn = _open_read_only(path)
        try:
            tables = {str(r[0]) for r in conn.execute(DIALECT.sql["table_names"])}
        finally:
            conn.close()
    except apsw.Error:
        return False
    return bool(tables) and "jobq_schema" not in tables


def _open_read_only(path: str) -> apsw.Connection:
    """``path`` read-only, leaving nothing beside it. Without a -wal (as a backup is written, and
    a queue after its last process closed) the file is whole by itself and is read as immutable:
    SQLite's read-only WAL mode would make a -shm next to it (and cannot in a read-only directory)."""
    return read_only_connection(path, immutable=not os.path.exists(f"{path}-wal"))


def _newest_id_as_it_stands(path: str) -> int | None:
    """The newest id the queue at ``path`` handed out, read without a migration and, when it has
    no -wal, without locks (``restore`` reads it so under its own lock): its jobs' largest id (the
    rightmost leaf of the table's b-tree), its id floor, an older schema's AUTOINCREMENT counter,
    whichever can be read (a queue jobq cannot open, damaged or made by a newer jobq, too)."""
    found: list[int] = []
    try:
        conn = _open_read_only(path)
    except apsw.Error:
        return None
    try:
        for name in ("damaged_newest_job", "damaged_id_floor", "damaged_autoincrement"):
            with contextlib.suppress(apsw.Error):
                found += [int(r[0]) for r in conn.execute(DIALECT.sql[name]) if isinstance(r[0], int)]
    finally:
        conn.close()
    return max(found, default=None)


def _set_aside(path: str, now: float) -> str:
    """Keep the queue file about to be replaced, under a new name beside it, with any -wal and
    -shm left (a -wal that could not be folded in belongs to this file, never to the next)."""
    stamp = dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{path}.replaced-{stamp}"
    n = 1
    while os.path.lexists(aside):
        n += 1
        aside = f"{path}.replaced-{stamp}-{n}"
    try:
        os.link(path, aside)  # the queue stays at its name until the restored file replaces it
    except OSError:
        os.rename(path, aside)  # a filesystem without hard links
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.rename(path + suffix, aside + suffix)
    return aside


def _open(path: str) -> apsw.Connection:
    try:
        return apsw.Connection(path)
    except apsw.Error as exc:
        raise _storage_error(exc, path) from None


def _open_backup(source: str) -> apsw.Connection:
    """The backup, read-only (it is never written)."""
    try:
        conn = _open_read_only(source)
        conn.execute("PRAGMA schema_version").fetchall()  # a file that is no database fails here
    except apsw.Error as exc:
        raise _storage_error(exc, source) from None
    return conn


def _copy(source: apsw.Connection, target: apsw.Connection, source_path: str, target_path: str) -> None:
    """Every page of ``source`` into ``target``, in one step: one read transaction, so the copy
    is one commit's state (a stepwise backup starts over at each commit of another process, and
    never ends under a busy worker)."""

    def step() -> None:
        with target.backup("main", source, "main") as b:
            b.step(-1)

    _retry_busy(step, source_path, target_path)


def _checked_summary(target: apsw.Connection, source_path: str) -> tuple[int, int]:
    try:
        if not target.execute(DIALECT.sql["schema_table_exists"]).fetchall():
            raise StorageError(f"no jobq queue in {source_path}")
        check = [str(r[0]) for r in target.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise StorageError(f"{source_path}: the copy fails SQLite's check: {'; '.join(check)[:200]}")
        return _summary(target.execute(DIALECT.sql["copy_summary"]).fetchall()[0])
    except apsw.Error as exc:
        raise _storage_error(exc, source_path) from None


def _summary(row: Sequence[Any]) -> tuple[int, int]:
    """``copy_summary``'s row: (jobs, newest id)."""
    return int(row[0]), int(row[1])


def _retry_busy(call: Callable[[], T], path: str, target: str) -> T:
    """``call``, a copy from the database at ``path`` to the file ``target``, retried while
    ``path`` is locked (a WAL read waits only for a recovery of the -wal)."""
    try:
        return while_busy(call)
    except apsw.BusyError:
        raise StorageError(f"{path}: database stayed locked for {LOCKED_GIVE_UP_SECONDS:g} s") from None
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise _storage_error(exc, path) from None  # what was read
    except apsw.Error as exc:
        raise _storage_error(exc, target) from None  # what was written: a full disk, an I/O error


def _new_private_file(final: str, kind: str) -> tuple[str, int]:
    """A new empty file beside ``final`` that only this user may read (the copy holds every
    payload; SQLite keeps the mode of an existing file), named ``<final>.<kind>-<pid>-<random>``
    (a process of another PID namespace may have the same pid), and a descriptor that holds an
    ``flock`` on it until the caller closes it. Files of the same kind left by killed processes
    are removed first (``_remove_left``)."""
    _remove_left(final, kind)
    tmp = f"{final}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot write {final}: {exc.strerror}") from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # just made by this process: nobody else holds it
    return tmp, fd


def _remove_left(final: str, kind: str) -> None:
    """Removes the temporary files of ``kind`` beside ``final`` that a killed backup or restore
    left: older than ``LEFT_TEMPORARY_SECONDS`` and locked by no process (a live one holds its
    ``flock``, in any container on this machine). Whatever cannot be checked is left alone."""
    name = re.compile(re.escape(os.path.basename(final)) + rf"\.{kind}-\d+(-[0-9a-f]+)?")
    for left in glob.glob(f"{glob.escape(final)}.{kind}-*"):
        if not name.fullmatch(os.path.basename(left)):
            continue  # its -wal or -shm (removed with it), or not ours
        try:
            if time.time() - os.stat(left).st_mtime < LEFT_TEMPORARY_SECONDS:
                continue
            fd = os.open(left, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live backup or restore
        else:
            _remove(left)
        finally:
            os.close(fd)


def _link_new(tmp: str, dest: str, taken: str) -> None:
    """``tmp`` given the name ``dest``, unless a file took that name meanwhile (StorageError
    ``taken``)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise StorageError(taken) from None
    except OSError as exc:
        if os.path.lexists(dest):
            raise StorageError(taken) from None
        try:
            os.rename(tmp, dest)  # a filesystem without hard links
        except OSError:
            raise StorageError(f"cannot write {dest}: {exc.strerror}") from None


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(path: str) -> None:
    """The new name made durable (a power loss must not leave the old one)."""
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(tmp: str) -> None:
    for suffix in ("", *_SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp + suffix)
