"""The demo's producer: every few seconds, write a new random file under the data root and submit it.

Run by ``jobq producer`` (and ``python src/producer/producer.py``, which calls it); ``jobq enqueue
PATH`` submits one existing file with ``submit_file``.

A producer killed between writing a file and submitting it leaves an orphan file at worst, never a
half-submitted job: the file is complete before it has a job-able name (``new_job_file``) and the
job is one insert keyed by the file (``submit_file``). On start, a producer submits the orphans of
its host (recent, never-stamped files with no job); the idempotency key makes this safe when
several producers do it at once or the job exists after all.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from jobq.backends.base import JobFilter
from jobq.config import Settings
from jobq.demo.files import FILE_TASK, FILES_SUBDIR, host_tag, new_job_file
from jobq.demo.paths import job_path_text, resolve_job_path
from jobq.demo.stamps import scan_stamps
from jobq.errors import InvalidPayload, StorageError
from jobq.queue import Queue
from jobq.redact import redact_text

ORPHAN_WINDOW_SECONDS_DEFAULT = 3600.0
"""On start, files of this host younger than this and never stamped are submitted if they have no job."""
_PRODUCED_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-(?P<host>[A-Za-z0-9._]+)-\d+-[0-9a-f]{16}\.txt$")


def file_key(data_root: str | os.PathLike[str], real: Path) -> str:
    """The idempotency key of a file job: ``file:`` + the path under the data root.

    The path, not just the name, so that two files of the same name in different folders are two
    jobs; producer files have unique names, so for them this is ``file:files/<name>``.
    """
    return "file:" + os.path.relpath(real, os.path.realpath(os.path.abspath(data_root)))


def submit_file(queue: Queue, settings: Settings, path: str | os.PathLike[str], on_conflict: str = "return") -> int:
    """Validate one existing file and submit its job exactly as the producer does; return the job id.

    The payload is ``{"path": "data/files/<name>"}`` (relative to the working directory when the
    data root lies under it), task ``stamp``, on ``settings.queue``, keyed by the file: submitting
    the same file again returns the existing job's id (``on_conflict="raise"``: DuplicateJob).

    Raises UnsafePath / FileMissing (``jobq.demo.paths``) with a one-line message, StorageError.
    """
    payload_path, key = file_job(settings.data_dir, path, settings.database_url)
    return queue.enqueue({"path": payload_path}, queue=settings.queue, task=FILE_TASK, key=key, on_conflict=on_conflict)


def file_job(
    data_dir: str | os.PathLike[str], path: str | os.PathLike[str], database_url: str | None = None
) -> tuple[str, str]:
    """A file's job as every submitter makes it (the producer, ``jobq enqueue PATH``, the
    manager): the payload's ``path`` and the idempotency key (``file_key``), the path checked as
    the consumer checks it. Raises UnsafePath / FileMissing (``jobq.demo.paths``)."""
    real = resolve_job_path(data_dir, path, database_url=database_url)
    return job_path_text(data_dir, real), file_key(data_dir, real)


def find_orphans(
    settings: Settings, *, now: float | None = None, window: float = ORPHAN_WINDOW_SECONDS_DEFAULT
) -> list[Path]:
    """Files this host's producers wrote that may never have been submitted (recent, never stamped)."""
    files = Path(settings.data_dir) / FILES_SUBDIR
    if not files.is_dir():
        return []
    now = time.time() if now is None else now
    host = host_tag()
    found: list[Path] = []
    for entry in os.scandir(files):
        m = _PRODUCED_NAME.match(entry.name)
        if not m or m.group("host") != host or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < now - window:
                continue
            with open(entry.path, "rb") as f:  # scanned in pieces: a file may be gigabytes
                if next(scan_stamps(f.read), None) is not None:
                    continue
        except OSError:
            continue
        found.append(Path(entry.path))
    return sorted(found)


def submit_orphans(queue: Queue, settings: Settings, out: TextIO) -> int:
    """Submit the orphan files of this host that have no job yet; return how many were submitted."""
    submitted = 0
    for path in find_orphans(settings):
        text = job_path_text(settings.data_dir, path.resolve())
        # The key makes a duplicate impossible anyway; the lookup only avoids a misleading log line.
        if queue.count(JobFilter(search=text, tasks=(FILE_TASK,))):
            continue
        print(f"Producer: Submitting {text} (unsubmitted file from an earlier run)", file=out, flush=True)
        try:
            submit_file(queue, settings, path)
            submitted += 1
        except InvalidPayload as exc:
            print(f"Producer: skipping {text}: {exc}", file=out, flush=True)
    return submitted


def run_producer(
    settings: Settings,
    stop_event: threading.Event | None = None,
    *,
    queue: Queue | None = None,
    out: TextIO | None = None,
    max_files: int | None = None,
) -> None:
    """Write and submit a file every ``settings.producer_interval_seconds`` until stopped.

    Args:
        stop_event: set it to stop. When None, SIGTERM / SIGINT stop the loop (main thread only).
        queue: the queue to submit to (default: opened from ``settings`` and closed at the end).
        out: where the ``Producer: Submitting data/files/...`` lines go (default stdout, flushed).
        max_files: stop after this many files (tests).

    A database outage is logged and the unsubmitted files are retried at the next tick; nothing
    is lost.
    """
    out = out or sys.stdout
    stop = stop_event or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if stop_event is None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    own = queue is None

    def shown(exc: Exception) -> str:  # a driver's message may quote the URL: never its password
        return redact_text(str(exc), settings.database_url)

    q = queue or Queue(settings=settings)
    unsubmitted: list[Path] = []
    made = 0
    try:
        try:
            submit_orphans(q, settings, out)
        except StorageError as exc:
            print(f"Producer: could not look for unsubmitted files: {shown(exc)}", file=out, flush=True)
        while not stop.is_set() and (max_files is None or made < max_files):
            try:
                unsubmitted.append(new_job_file(settings.data_dir))
                made += 1
            except OSError as exc:
                print(f"Producer: cannot write a file under {settings.data_dir}: {exc}", file=out, flush=True)
            while unsubmitted:
                path = unsubmitted[0]
                text = job_path_text(settings.data_dir, path.resolve())
                print(f"Producer: Submitting {text}", file=out, flush=True)
                try:
                    submit_file(q, settings, path)
                except StorageError as exc:
                    print(f"Producer: database unavailable, will retry: {shown(exc)}", file=out, flush=True)
                    break
                except InvalidPayload as exc:  # removed or replaced meanwhile: nothing to submit
                    print(f"Producer: skipping {text}: {exc}", file=out, flush=True)
                unsubmitted.pop(0)
            if max_files is not None and made >= max_files and not unsubmitted:
                break
            stop.wait(settings.producer_interval_seconds)
    finally:
        if own:
            q.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
