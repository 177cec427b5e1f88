"""jobq: a crash-safe persistent job queue on SQLite (embedded) or PostgreSQL (scale-out).

At-least-once delivery with leases, heartbeats and fencing tokens: a worker whose lease was lost
can never complete, fail or extend a job that was handed to another.
"""

import importlib
from typing import TYPE_CHECKING, Any

from jobq.backends.base import (
    ActionResult,
    ActionResults,
    ControlEvent,
    JobFilter,
    Page,
    QueueControl,
    QueueCopy,
    QueueStats,
    ScheduleAction,
    ScheduleInfo,
    WorkerEnd,
    WorkerInfo,
)
from jobq.config import Settings, load_settings
from jobq.errors import (
    ConfigError,
    DuplicateJob,
    InvalidPayload,
    InvalidTransition,
    JobCancelled,
    JobNotFound,
    JobqError,
    LeaseLost,
    OutcomeUnknown,
    PayloadTooLarge,
    ScheduleNotFound,
    StorageError,
    StoreReplaced,
)
from jobq.job import TRANSITIONS, Action, Event, EventKind, Job, JobStatus
from jobq.queue import Queue, backup, restore
from jobq.schedules import Schedule, periodic

if TYPE_CHECKING:
    from jobq import async_queue as async_queue
    from jobq import worker as worker
    from jobq.async_queue import AsyncQueue
    from jobq.worker import JobContext, PermanentError, Worker, WorkerShutdown, task

# Imported at first use: asyncio and the worker's modules took a third of every `import jobq`
# (0.1 s of 0.3) in processes that use neither, such as `jobq list` or a producer.
_LAZY = {
    "AsyncQueue": "jobq.async_queue",
    "JobContext": "jobq.worker",
    "PermanentError": "jobq.worker",
    "Worker": "jobq.worker",
    "WorkerShutdown": "jobq.worker",
    "task": "jobq.worker",
    "async_queue": None,  # the submodules themselves (`jobq.worker.task`, `jobq.worker.REGISTRY`)
    "worker": None,
}

__version__ = "0.1.0"

__all__ = [
    "TRANSITIONS",
    "Action",
    "ActionResult",
    "ActionResults",
    "AsyncQueue",
    "ConfigError",
    "ControlEvent",
    "DuplicateJob",
    "Event",
    "EventKind",
    "InvalidPayload",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFilter",
    "JobNotFound",
    "JobStatus",
    "JobqError",
    "LeaseLost",
    "OutcomeUnknown",
    "Page",
    "PayloadTooLarge",
    "PermanentError",
    "Queue",
    "QueueControl",
    "QueueCopy",
    "QueueStats",
    "Schedule",
    "ScheduleAction",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Settings",
    "StorageError",
    "StoreReplaced",
    "Worker",
    "WorkerEnd",
    "WorkerInfo",
    "WorkerShutdown",
    "backup",
    "load_settings",
    "periodic",
    "restore",
    "task",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jobq' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name] or f"jobq.{name}")
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
