"""jobq: a crash-safe persistent job queue on SQLite (embedded) or PostgreSQL (scale-out).

At-least-once delivery with leases, heartbeats and fencing tokens: a worker whose lease was lost
can never complete, fail or extend a job that was handed to another.
"""

from jobq.async_queue import AsyncQueue
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
from jobq.worker import JobContext, PermanentError, Worker, WorkerShutdown, task

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
