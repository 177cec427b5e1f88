"""The seed's file jobs: safe path resolution under the data root, idempotent fenced stamping.

A file job names a file by path (``{"path": "data/files/x.txt"}``); the consumer appends one stamp
line per run of the job. Two things must hold whatever is killed or frozen when:

* **Containment.** Nothing outside the data root is ever opened for writing: ``..``, absolute paths
  elsewhere, symlinks leading out, directories, FIFOs, devices and the queue's own database files
  are refused (``UnsafePath``). The check resolves the path; the write then re-opens it component
  by component with ``O_NOFOLLOW`` under the root and compares ``fstat`` with the checked file, so a
  symlink swapped in after the check is caught, not followed.
* **Exactly one stamp per (job, run).** Under an exclusive ``flock`` the stamper first proves it
  still holds the job's lease (a worker frozen past its lease is refused), then scans the file for
  its own stamp and appends it only when absent, then ``fsync``s before unlocking. The scan reads
  the file in 1 MiB pieces (``scan_stamps``): a file of gigabytes costs time, not memory. An attempt that
  was killed after writing but before the job was marked COMPLETED finds its stamp on the next
  attempt and does not write it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import io
import os
import re
import secrets
import socket
import stat
import string
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from jobq.errors import InvalidPayload, JobqError

FILES_SUBDIR = "files"
"""Where producers write their files, under the data root (``data/files``)."""
PATH_MAX_CHARS = 1024
"""Longest job path accepted (characters)."""
NAME_MAX_BYTES = 255
"""Longest path component accepted (bytes), the limit of common Linux filesystems."""
LOCK_TIMEOUT_SECONDS_DEFAULT = 30.0
"""How long a stamper waits for another process's lock on the same file before giving up (retryable)."""
LOCK_POLL_SECONDS = 0.02
DATABASE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3", ".sqlite-wal", ".sqlite-shm")
"""Names a job may never stamp: the queue's database (and any SQLite database) lives in the data root."""
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")

_STAMP_BODY = rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}) job=(\d+)(?: run=(\d+))?"
STAMP_RE = re.compile(rb"^" + _STAMP_BODY + rb"\r?\n?$")
"""One stamp line: ``<ISO-8601 UTC> job=<id>`` plus `` run=<n>`` for runs after the first."""
# The same, found inside a buffer of whole lines: a line is what lies between \r or \n (as
# bytes.splitlines() cuts), and the stamp must be all of it.
_STAMP_IN_LINES = re.compile(rb"(?<![^\r\n])" + _STAMP_BODY + rb"(?=[\r\n]|\Z)")
STAMP_SCAN_CHUNK_BYTES = 1 << 20
"""How much of a job file the stamp check reads at a time: its memory stays bounded by this (plus
one stamp-sized line), not by the file, which a user may have made gigabytes long."""
_DIGITS_KEPT = 21
"""Runs of more digits are shortened to this many (see ``_squeeze``): 21 digits exceed any
64-bit job id, and are more than any fixed-width field of a stamp (4)."""
_LONG_DIGITS = re.compile(rb"\d{%d,}" % (_DIGITS_KEPT + 1))
_ID_LIMIT = 10**20
_ID_OVERFLOW = 10**21 - 1
"""How an id or run of ``_ID_LIMIT`` or more (never a job's: ids are 64-bit) is reported, whatever
its digits: a shortened run (``_squeeze``) no longer knows them."""
_SQUEEZED_STAMP_MAX_BYTES = len(b"0000-00-00T00:00:00." + b"+00:00 job=" + b" run=") + 3 * _DIGITS_KEPT
"""The longest a stamp line can be once its digit runs are shortened: a longer line is no stamp."""


class UnsafePath(InvalidPayload):
    """A job path that must not be touched: outside the data root, not a regular file, or a database file."""


class FileMissing(InvalidPayload):
    """The job's file does not exist (``file not found: ...``)."""


class StampBusy(JobqError):
    """Another process held the file's lock for too long; the attempt may be retried."""


@runtime_checkable
class LeaseGuard(Protocol):
    """What ``stamp_file`` needs from a running job (``jobq.worker.JobContext`` is one)."""

    def ensure_lease(self) -> None:
        """Raise (``jobq.LeaseLost``) unless this worker still holds the job's lease right now."""
        ...


# -- path resolution ------------------------------------------------------------------------


def _show(text: str) -> str:
    """The path as it may appear in a one-line message: control characters escaped, long ones cut."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= 120 else shown[:117] + "..."


def _within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def database_files(database_url: str | None) -> set[str]:
    """Real paths of the SQLite database named by ``database_url`` and its side files (none for PostgreSQL)."""
    if not database_url:
        return set()
    scheme = database_url.split("://", 1)[0].lower() if "://" in database_url else "sqlite"
    if scheme != "sqlite":
        return set()
    from jobq.backends.sqlite import parse_sqlite_url  # a URL parser only: no SQL here

    try:
        path, _ = parse_sqlite_url(database_url)
    except JobqError:
        return set()
    real = os.path.realpath(path)
    return {real + suffix for suffix in _SQLITE_SIDE_FILES}


def _check_text(text: str) -> None:
    """Refuse path text that is malformed before it touches the filesystem."""
    if not text:
        raise UnsafePath("path is empty")
    if "\x00" in text:
        raise UnsafePath(f"path contains a NUL byte: {_show(text)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UnsafePath(f"path contains a control character (newline, tab, ...): {_show(text)}")
    if len(text) > PATH_MAX_CHARS:
        raise UnsafePath(f"path is too long ({len(text)} characters, limit {PATH_MAX_CHARS}): {_show(text)}")
    for part in text.split("/"):
        try:
            size = len(os.fsencode(part))
        except UnicodeError:
            raise UnsafePath(f"path is not valid text: {_show(text)}") from None
        if size > NAME_MAX_BYTES:
            raise UnsafePath(f"file name too long ({size} bytes, limit {NAME_MAX_BYTES}): {_show(text)}")
        if part == "..":
            raise UnsafePath(f"path must not contain '..': {_show(text)}")


def _kind(mode: int) -> str | None:
    """Why a file of this mode cannot be stamped, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISLNK(mode):
        return "is a symlink"
    if stat.S_ISFIFO(mode):
        return "is a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    return "is not a regular file"


def resolve_job_path(data_root: str | os.PathLike[str], path: object, *, database_url: str | None = None) -> Path:
    """Resolve a job's path to the real path of a regular file inside ``data_root``.

    Args:
        data_root: the data directory (``settings.data_dir``, e.g. ``data``).
        path: as submitted: relative to the working directory (``data/files/x.txt``, as the
            producer logs it), relative to the data root (``files/x.txt``), or absolute.
        database_url: the queue's database; its files (and any ``*.db``) are refused.

    Returns the real, absolute path. Raises ``UnsafePath`` (never retried: the same path will be
    refused again) or ``FileMissing`` (``file not found: ...``), each with a one-line message.

    >>> resolve_job_path("data", "data/files/x.txt")  # doctest: +SKIP
    PosixPath('/home/me/jobq/data/files/x.txt')
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise UnsafePath(f"path must be text, not {type(path).__name__}")
    _check_text(path)
    root_abs = os.path.abspath(data_root)
    root_real = os.path.realpath(root_abs)
    if not os.path.isdir(root_real):
        raise FileMissing(f"file not found: {_show(path)} (no data directory {root_abs})")

    if os.path.isabs(path):
        candidate = os.path.normpath(path)
        if not (_within(candidate, root_abs) or _within(candidate, root_real)):
            raise UnsafePath(f"path is outside the data directory {root_abs}: {_show(path)}")
    else:
        # The seed logs paths relative to the working directory (data/files/x.txt); a path that
        # does not lie under the root that way is taken relative to the root (files/x.txt).
        from_cwd = os.path.abspath(path)
        candidate = from_cwd if _within(from_cwd, root_abs) else os.path.join(root_abs, path)

    real = os.path.realpath(candidate)
    if not _within(real, root_real):
        raise UnsafePath(f"path leads outside the data directory {root_abs} (through a symlink): {_show(path)}")
    if real == root_real:
        raise UnsafePath(f"path is the data directory itself: {_show(path)}")
    if real.lower().endswith(DATABASE_SUFFIXES) or real in database_files(database_url):
        raise UnsafePath(f"path is a database file of the queue, refused: {_show(path)}")
    try:
        st = os.lstat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise FileMissing(f"file not found: {_show(path)}") from None
    except OSError as exc:
        raise UnsafePath(f"cannot inspect {_show(path)}: {exc.strerror}") from None
    why = _kind(st.st_mode)
    if why:
        raise UnsafePath(f"path {why}, not a regular file: {_show(path)}")
    if st.st_nlink > 1:
        # A hard link inside the root may name a file that lives elsewhere (e.g. /etc/passwd on
        # the same filesystem); no producer makes one, so refuse it rather than guess.
        raise UnsafePath(f"file has {st.st_nlink} hard links, refused: {_show(path)}")
    return Path(real)


def job_path_text(data_root: str | os.PathLike[str], real: str | os.PathLike[str]) -> str:
    """The path to put in a job's payload for a file resolved under ``data_root``.

    Relative to the working directory when the root lies under it (``data/files/x.txt``, the seed's
    form), else absolute. Built from the root as configured, so a symlinked data root still reads
    ``data/...``.
    """
    root_abs = os.path.abspath(data_root)
    inside = os.path.relpath(os.fspath(real), os.path.realpath(root_abs))
    full = os.path.normpath(os.path.join(root_abs, inside))
    return display_path(full)


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies under it, else absolute."""
    full = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(full, cwd) if _within(full, cwd) and full != cwd else full


# -- stamping -------------------------------------------------------------------------------


def stamp_line(job_id: int, run: int = 1, *, now: float | None = None) -> str:
    """The stamp for one run of a job, with a trailing newline.

    >>> stamp_line(7, 2, now=0.0)
    '1970-01-01T00:00:00.000Z job=7 run=2\\n'
    """
    when = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z job={job_id}"
    return text + (f" run={run}" if run > 1 else "") + "\n"


def stamps_in(data: bytes) -> list[tuple[int, int]]:
    """Every (job, run) stamped in a file's content, in order (duplicates kept).

    A line is a stamp when all of it matches ``STAMP_RE`` (lines end at ``\\n``, ``\\r`` or both).
    An id or run of 10**20 or more (never a job's) is reported as 10**21 - 1.
    """
    return list(scan_stamps(io.BytesIO(data).read))


def _squeeze(m: re.Match[bytes]) -> bytes:
    # A digit run longer than _DIGITS_KEPT becomes exactly _DIGITS_KEPT digits of the same value
    # (leading zeros dropped first) or, when its value is that large, all nines: a stamp matches
    # where it did (\d{4} and \d{2} fail on either, \d+ takes either) with the same job and run.
    # Applied again to a shortened run with more digits appended, it gives what the whole run gives.
    significant = m.group().lstrip(b"0")
    if len(significant) < _DIGITS_KEPT:
        return significant.rjust(_DIGITS_KEPT, b"0")
    return b"9" * _DIGITS_KEPT


def _line_end(data: bytes) -> int:
    """Index just past the first line break in ``data``, or -1."""
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) + 1 if ends else -1


def scan_stamps(read: Callable[[int], bytes]) -> Iterator[tuple[int, int]]:
    """Every (job, run) stamped in a stream, in order, read in ``STAMP_SCAN_CHUNK_BYTES`` pieces.

    ``read(n)`` returns up to ``n`` bytes, ``b""`` at the end (``file.read``). Same lines as
    ``stamps_in`` finds, in bounded memory: digit runs are shortened (``_squeeze``), and a line
    that grows past the longest possible stamp is skipped to its end without being kept (a
    sparse file of gigabytes of NULs is one such line).
    """
    carry = b""  # the start of a line not ended yet, shortened
    skipping = False  # inside a line already too long to be a stamp
    while chunk := read(STAMP_SCAN_CHUNK_BYTES):
        if skipping:
            end = _line_end(chunk)
            if end < 0:
                continue
            chunk, skipping = chunk[end:], False
        data = _LONG_DIGITS.sub(_squeeze, carry + chunk)
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        whole, carry = data[:cut], data[cut:]
        yield from _stamps_of_lines(whole)
        if len(carry) > _SQUEEZED_STAMP_MAX_BYTES:
            carry, skipping = b"", True
    if carry and not skipping:
        yield from _stamps_of_lines(carry)


def _stamps_of_lines(data: bytes) -> Iterator[tuple[int, int]]:
    for m in _STAMP_IN_LINES.finditer(data):
        job, run = int(m.group(1)), int(m.group(2) or 1)
        yield (job if job < _ID_LIMIT else _ID_OVERFLOW), (run if run < _ID_LIMIT else _ID_OVERFLOW)


def _has_stamp(fd: int, job_id: int, run: int) -> bool:
    """Whether the file holds the stamp of (``job_id``, ``run``), read with ``pread`` from the start."""
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        data = os.pread(fd, n, offset)
        offset += len(data)
        return data

    return any(found == (job_id, run) for found in scan_stamps(read))


def _open_under_root(root_real: str, real: str, display: str) -> int:
    """Open ``real`` for read+write walking down from the root one component at a time.

    Every directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's fd, and
    the file itself with ``O_NOFOLLOW``: a symlink swapped in anywhere below the root after the
    check fails here (ELOOP / ENOTDIR) instead of being followed out of the root.
    """
    parts = os.path.relpath(real, root_real).split(os.sep)
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"path is not inside the data directory: {display}")
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(root_real, dir_flags)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, dir_flags | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise FileMissing(f"file not found: {display}") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(f"a directory of the path was replaced by a symlink: {display}") from None
                raise
            os.close(fd)
            fd = child
        name = parts[-1]
        try:
            before = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise FileMissing(f"file not found: {display}") from None
        why = _kind(before.st_mode)
        if why:  # checked before open: opening a FIFO or a device may itself have effects
            raise UnsafePath(f"path {why} (changed after the check), not a regular file: {display}")
        try:
            file_fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            raise FileMissing(f"file not found: {display}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"path was replaced by a symlink after the check: {display}") from None
            raise
    finally:
        os.close(fd)
    after = os.fstat(file_fd)
    if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(file_fd)
        raise UnsafePath(f"path was swapped for another file during the check: {display}")
    if after.st_nlink > 1:
        os.close(file_fd)
        raise UnsafePath(f"file has {after.st_nlink} hard links, refused: {display}")
    return file_fd


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
    Raises UnsafePath, FileMissing, StampBusy (lock wait timed out), LeaseLost / JobCancelled
    (from the guard), OSError.
    """
    ensure = guard.ensure_lease if isinstance(guard, LeaseGuard) else guard
    shown = _show(os.fspath(path))
    real = resolve_job_path(data_root, path, database_url=database_url)
    root_real = os.path.realpath(os.path.abspath(data_root))
    fd = _open_under_root(root_real, os.fspath(real), shown)
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
