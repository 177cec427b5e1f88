"""The demo's consumer: claim a file job, wait a random 7-15 s, stamp the file once, complete the job.

Run by ``jobq consumer`` (and ``python src/consumer/consumer.py``, which calls it). The handler is
``stamp``; the worker runtime (``jobq.worker.Worker``) claims, heartbeats, records the outcome and
drains on SIGTERM. What makes the effect exactly-once is ``jobq.demo.files.stamp_file``: lease
checked under the file lock right before writing, and the write skipped when this run's stamp is
already there.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from jobq.config import Settings, parse_range
from jobq.demo.files import FILE_TASK, stamp_file
from jobq.demo.paths import FileMissing, UnsafePath, resolve_job_path
from jobq.job import Job
from jobq.queue import Queue
from jobq.worker import PermanentError, Worker


class StampContext(Protocol):
    """What the stamp handler uses of ``jobq.worker.JobContext``."""

    job: Job

    @property
    def cancelled(self) -> threading.Event: ...

    def check(self) -> None: ...

    def ensure_lease(self) -> None: ...


def make_stamp_handler(
    settings: Settings, *, out: TextIO | None = None, rng: random.Random | None = None
) -> Callable[[StampContext], dict[str, Any]]:
    """The ``stamp`` handler for ``settings`` (data root, database, delay range).

    It validates the payload's path (an unsafe path or a missing file fails the job at once with
    ``PermanentError``: retrying cannot help), waits a random delay from ``settings.consumer_delay``
    (waking at once on cancel or lost lease), stamps the file, and logs
    ``Consumer: Processed data/files/...``. Returns ``{"stamped": bool}`` (False: an earlier,
    interrupted attempt had already written this run's stamp).
    """
    low, high = parse_range(settings.consumer_delay)
    draw = rng or random.Random()

    def stamp(ctx: StampContext) -> dict[str, Any]:
        out_ = out or sys.stdout
        payload = ctx.job.payload
        path = payload.get("path") if isinstance(payload, dict) else None
        if not isinstance(path, str):
            raise PermanentError('payload must be {"path": "<file under the data directory>"}')
        try:
            # Checked before the wait so that a bad job fails at once, and again when stamping.
            resolve_job_path(settings.data_dir, path, database_url=settings.database_url)
            ctx.cancelled.wait(draw.uniform(low, high))
            ctx.check()
            written = stamp_file(
                ctx, path, ctx.job.id, ctx.job.run, data_root=settings.data_dir, database_url=settings.database_url
            )
        except (UnsafePath, FileMissing) as exc:
            raise PermanentError(str(exc)) from None
        print(f"Consumer: Processed {path}", file=out_, flush=True)
        return {"stamped": written}

    return stamp


def run_consumer(settings: Settings, *, name: str | None = None, out: TextIO | None = None) -> None:
    """Run a worker with the ``stamp`` handler until SIGTERM (drains) or a second signal (forces).

    The worker's name (shown in ops) is ``name``, else supervisord's program name
    (``SUPERVISOR_PROCESS_NAME``), else ``consumer-<pid>``.
    """
    name = name or os.environ.get("SUPERVISOR_PROCESS_NAME") or f"consumer-{os.getpid()}"
    with Queue(settings=settings) as queue:
        worker = Worker(
            queue,
            handlers={FILE_TASK: make_stamp_handler(settings, out=out)},
            queues=[settings.queue],
            concurrency=settings.concurrency,
            name=name,
        )
        worker.run()
