"""The demo's file jobs on disk: new job files written whole, and each run stamped exactly once.

A file job names a file by path (``{"path": "data/files/x.txt"}``, task ``stamp``); the consumer
appends one stamp line (``stamps.stamp_line``) per run of the job. Two things must hold whatever
is killed or frozen when:

* **Containment.** Nothing outside the data root is ever opened for writing (``paths``: the path
  is checked, then re-opened under the root without following symlinks).
* **Exactly one stamp per (job, run).** Under an exclusive ``flock`` the stamper first proves it
  still holds the job's lease (a worker frozen past its lease is refused), then scans the file for
  its own stamp and appends it only when absent, then ``fsync``s before unlocking. An attempt that
  was killed after writing but before the job was marked COMPLETED finds its stamp on the next
  attempt and does not write it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import re
import secrets
import socket
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from jobq.demo.paths import open_under_root, resolve_job_path, shown_path
from jobq.demo.stamps import scan_stamps, stamp_line
from jobq.errors import JobqError

FILE_TASK = "stamp"
"""The task name of file jobs (the consumer's handler)."""
FILES_SUBDIR = "files"
"""Where producers write their files, under the data root (``data/files``)."""
LOCK_TIMEOUT_SECONDS_DEFAULT = 30.0
"""How long a stamper waits for another process's lock on the same file before giving up (retryable)."""
LOCK_POLL_SECONDS = 0.02


class StampBusy(JobqError):
    """Another process held the file's lock for too long; the attempt may be retried."""


@runtime_checkable
class LeaseGuard(Protocol):
    """What ``stamp_file`` needs from a running job (``jobq.worker.JobContext`` is one)."""

    def ensure_lease(self) -> None:
        """Raise (``jobq.LeaseLost``) unless this worker still holds the job's lease right now."""
        ...


# -- stamping -------------------------------------------------------------------------------


def _has_stamp(fd: int, job_id: int, run: int) -> bool:
    """Whether the file holds the stamp of (``job_id``, ``run``), read with ``pread`` from the start."""
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        data = os.pread(fd, n, offset)
        offset += len(data)
        return data

    return any(found == (job_id, run) for found in scan_stamps(read))


def _lock(fd: int, timeout: float, display: str) -> None:
    """``flock(LOCK_EX)`` with a deadline, so a frozen holder cannot block a live worker forever."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StampBusy(f"{display}: locked by another process for over {timeout:g} s") from None
            time.sleep(LOCK_POLL_SECONDS)


def stamp_file(
    guard: LeaseGuard | Callable[[], None],
    path: str | os.PathLike[str],
    job_id: int,
    run: int = 1,
    *,
    data_root: str | os.PathLike[str],
    database_url: str | None = None,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS_DEFAULT,
    now: float | None = None,
) -> bool:
    """Append the stamp of (``job_id``, ``run``) to the file at ``path`` unless it is already there.

    Steps: resolve and check the path, re-open it safely under the root (``O_NOFOLLOW`` per
    component, ``fstat`` compared), ``flock(LOCK_EX)``, ``guard.ensure_lease()`` (a worker that lost
    its lease raises ``LeaseLost`` here and writes nothing), scan for the stamp, append it if absent,
    ``fsync``, unlock.

    Args:
        guard: the running job's context (its ``ensure_lease``) or a callable doing the same.

    Returns True when the stamp was written, False when this run was already stamped.
    Raises UnsafePath / FileMissing (``paths``), StampBusy (lock wait timed out), LeaseLost /
    JobCancelled (from the guard), OSError.
    """
    ensure = guard.ensure_lease if isinstance(guard, LeaseGuard) else guard
    shown = shown_path(os.fspath(path))
    real = resolve_job_path(data_root, path, database_url=database_url)
    root_real = os.path.realpath(os.path.abspath(data_root))
    fd = open_under_root(root_real, os.fspath(real), shown)
    try:
        _lock(fd, lock_timeout, shown)
        # Under the lock, check the lease and the file together: a zombie (frozen past its lease)
        # is refused here, and a live worker sees any stamp written by an earlier attempt.
        ensure()
        # Scanned in pieces, never read whole: the file is the user's and may be gigabytes.
        if _has_stamp(fd, job_id, run):
            return False
        line = stamp_line(job_id, run, now=now).encode()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a partial last line (a crash mid-write elsewhere) stays its own line
        os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return True
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- producing files ------------------------------------------------------------------------


def _word(rng: secrets.SystemRandom) -> str:
    # Lower-case letters only: a random line can never look like a stamp line.
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))


def host_tag() -> str:
    """This host's name as it appears in file names (safe characters only)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"


def new_job_file(data_root: str | os.PathLike[str], *, now: float | None = None) -> Path:
    """Write a new random text file under ``<data_root>/files`` and return its path.

    The name ``<UTC time>-<host>-<pid>-<random>.txt`` cannot collide across producers (host, pid and
    64 random bits). The content goes to a hidden temporary name first (``O_EXCL``, ``fsync``), then
    is hard-linked to its final name (which fails rather than overwrites) and the temporary removed,
    so no half-written file is ever visible under a job-able name.
    """
    files = Path(data_root) / FILES_SUBDIR
    _make_private_dirs(files)
    when = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    rng = secrets.SystemRandom()
    body = "".join(" ".join(_word(rng) for _ in range(8)) + "\n" for _ in range(3))
    for _ in range(10):
        name = f"{when.strftime('%Y%m%dT%H%M%S.%f')}Z-{host_tag()}-{os.getpid()}-{secrets.token_hex(8)}.txt"
        tmp = files / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"jobq demo file {name}\n{body}".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        final = files / name
        try:
            os.link(tmp, final)
        except FileExistsError:
            os.unlink(tmp)
            continue
        except OSError:  # a filesystem without hard links: rename (the random part makes a clash moot)
            os.rename(tmp, final)
        else:
            os.unlink(tmp)
        _fsync_dir(files)
        return final
    raise OSError(errno.EEXIST, f"could not find a free file name in {files}")


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents 0700 (the umask may narrow that further).

    ``Path.mkdir(parents=True)`` would give the parents 0777 minus the umask: 0755 under the usual
    022, a data root others can list.
    """
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another producer was quicker
            path.mkdir(mode=0o700)


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not cover its name)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
