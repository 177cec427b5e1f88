"""The exceptions jobq users may catch. Every message is one readable line."""

from __future__ import annotations


class JobqError(Exception):
    """Base of every error jobq raises on purpose."""


class LeaseLost(JobqError):
    """A heartbeat, complete or fail carried a lease that is no longer the job's current one.

    The job was rescued, cancelled, resubmitted or handed to another worker meanwhile. Nothing
    was changed; the refusal is recorded in the job's events.
    """

    def __init__(self, job_id: int, operation: str, detail: str = "") -> None:
        self.job_id = job_id
        self.operation = operation
        extra = f": {detail}" if detail else ""
        super().__init__(f"job {job_id}: lease lost, {operation} refused{extra}")


class InvalidTransition(JobqError):
    """An action is not allowed from the job's current status (see ``jobq.job.TRANSITIONS``)."""

    def __init__(self, job_id: int, action: str, status: str) -> None:
        self.job_id = job_id
        self.action = action
        self.status = status
        super().__init__(f"job {job_id}: cannot {action} a job that is {status}")


class JobNotFound(JobqError):
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found")


class DuplicateJob(JobqError):
    """``enqueue(..., key=K, on_conflict="raise")`` found K held by another job; nothing was stored."""

    def __init__(self, key: str, job_id: int) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(f"key {key!r} is held by job {job_id}")


class ScheduleNotFound(JobqError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule named {name!r}")


class InvalidPayload(JobqError):
    """The payload is not JSON-serialisable (jobq never pickles) or has the wrong shape."""


class PayloadTooLarge(InvalidPayload):
    def __init__(self, size: int, limit: int, *, at_least: bool = False, what: str = "payload") -> None:
        self.size = size
        self.limit = limit
        more = " or more" if at_least else ""
        super().__init__(f"{what} is {size} bytes{more}, over the limit of {limit} bytes")


class ConfigError(JobqError):
    """Bad settings: an unknown URL scheme, a malformed duration, an unknown handler, ..."""


class StorageError(JobqError):
    """The database cannot be used: missing, read-only, full, corrupt, or too old a SQLite."""


class OutcomeUnknown(StorageError):
    """PostgreSQL: the connection was lost after the COMMIT was sent, so the write may or may not
    have been applied, and this call could not find out which. Most writes find out themselves
    (docs/reliability.md); an enqueue without an idempotency key cannot, and raises this."""


class StoreReplaced(StorageError):
    """SQLite: the database file was removed, or replaced by another file, while this process had
    it open. The call that found it did nothing; the next call opens the file now at that path
    (what this process wrote before stays in the old file). Long-lived users (the worker, the
    metrics exporter) start over on the new file when they see it."""


class JobCancelled(JobqError):
    """Raised inside a handler (by ``JobContext.check``) when an operator cancelled its job."""
