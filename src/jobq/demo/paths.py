"""Where a file job may write: a path resolved to a regular file under the data root, opened safely.

Nothing outside the data root is ever opened for writing: ``..``, absolute paths elsewhere,
symlinks leading out, directories, FIFOs, devices and the queue's own database files are refused
(``UnsafePath``). ``resolve_job_path`` checks the path (resolved); ``open_under_root`` then re-opens
it component by component with ``O_NOFOLLOW`` under the root and compares ``fstat`` with the
checked file, so a symlink swapped in after the check is caught, not followed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from jobq.errors import InvalidPayload, JobqError

PATH_MAX_CHARS = 1024
"""Longest job path accepted (characters)."""
NAME_MAX_BYTES = 255
"""Longest path component accepted (bytes), the limit of common Linux filesystems."""
DATABASE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3", ".sqlite-wal", ".sqlite-shm")
"""Names a job may never stamp: the queue's database (and any SQLite database) lives in the data root."""
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


class UnsafePath(InvalidPayload):
    """A job path that must not be touched: outside the data root, not a regular file, or a database file."""


class FileMissing(InvalidPayload):
    """The job's file does not exist (``file not found: ...``)."""


# -- checking a path ------------------------------------------------------------------------


def shown_path(text: str) -> str:
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
        raise UnsafePath(f"path contains a NUL byte: {shown_path(text)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UnsafePath(f"path contains a control character (newline, tab, ...): {shown_path(text)}")
    if len(text) > PATH_MAX_CHARS:
        raise UnsafePath(f"path is too long ({len(text)} characters, limit {PATH_MAX_CHARS}): {shown_path(text)}")
    for part in text.split("/"):
        try:
            size = len(os.fsencode(part))
        except UnicodeError:
            raise UnsafePath(f"path is not valid text: {shown_path(text)}") from None
        if size > NAME_MAX_BYTES:
            raise UnsafePath(f"file name too long ({size} bytes, limit {NAME_MAX_BYTES}): {shown_path(text)}")
        if part == "..":
            raise UnsafePath(f"path must not contain '..': {shown_path(text)}")


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
        raise FileMissing(f"file not found: {shown_path(path)} (no data directory {root_abs})")

    if os.path.isabs(path):
        candidate = os.path.normpath(path)
        if not (_within(candidate, root_abs) or _within(candidate, root_real)):
            raise UnsafePath(f"path is outside the data directory {root_abs}: {shown_path(path)}")
    else:
        # The producer logs paths relative to the working directory (data/files/x.txt); a path
        # that does not lie under the root that way is taken relative to the root (files/x.txt).
        from_cwd = os.path.abspath(path)
        candidate = from_cwd if _within(from_cwd, root_abs) else os.path.join(root_abs, path)

    real = os.path.realpath(candidate)
    if not _within(real, root_real):
        raise UnsafePath(f"path leads outside the data directory {root_abs} (through a symlink): {shown_path(path)}")
    if real == root_real:
        raise UnsafePath(f"path is the data directory itself: {shown_path(path)}")
    if real.lower().endswith(DATABASE_SUFFIXES) or real in database_files(database_url):
        raise UnsafePath(f"path is a database file of the queue, refused: {shown_path(path)}")
    try:
        st = os.lstat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise FileMissing(f"file not found: {shown_path(path)}") from None
    except OSError as exc:
        raise UnsafePath(f"cannot inspect {shown_path(path)}: {exc.strerror}") from None
    why = _kind(st.st_mode)
    if why:
        raise UnsafePath(f"path {why}, not a regular file: {shown_path(path)}")
    if st.st_nlink > 1:
        # A hard link inside the root may name a file that lives elsewhere (e.g. /etc/passwd on
        # the same filesystem); no producer makes one, so refuse it rather than guess.
        raise UnsafePath(f"file has {st.st_nlink} hard links, refused: {shown_path(path)}")
    return Path(real)


def job_path_text(data_root: str | os.PathLike[str], real: str | os.PathLike[str]) -> str:
    """The path to put in a job's payload for a file resolved under ``data_root``.

    Relative to the working directory when the root lies under it (``data/files/x.txt``, as the
    producer logs it), else absolute. Built from the root as configured, so a symlinked data root still reads
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


# -- opening it -----------------------------------------------------------------------------


def open_under_root(root_real: str, real: str, display: str) -> int:
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
