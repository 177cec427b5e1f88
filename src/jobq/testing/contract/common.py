"""What every part of the contract suite uses: short names for the statuses, a job's event kinds."""

from __future__ import annotations

import jobq
from jobq import JobStatus

P, R, C, F, X = (
    JobStatus.PENDING,
    JobStatus.PROCESSING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


def kinds(q: jobq.Queue, job_id: int) -> list[str]:
    """The kinds of ``job_id``'s events, oldest first."""
    return [str(e.kind) for e in q.events(job_id)]
