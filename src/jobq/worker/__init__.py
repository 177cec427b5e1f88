"""Running handlers: ``Worker``, the ``JobContext`` handlers receive, and handler registration."""

from jobq.worker.context import JobContext, PermanentError, WorkerShutdown
from jobq.worker.registry import REGISTRY, Handler, load_handler, task
from jobq.worker.runtime import Worker, new_worker_id

__all__ = [
    "REGISTRY",
    "Handler",
    "JobContext",
    "PermanentError",
    "Worker",
    "WorkerShutdown",
    "load_handler",
    "new_worker_id",
    "task",
]
