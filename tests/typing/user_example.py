"""A user's program, typed: tests/acceptance/test_wheel.py checks it with ``mypy --strict`` against
the installed wheel (from a directory outside the repo), as a project depending on jobq would.

It must pass without ``ignore_missing_imports`` or stubs: jobq ships ``py.typed``.
"""

from __future__ import annotations

import jobq
from jobq.testing import FakeClock, drain


@jobq.task("resize")
def resize(ctx: jobq.JobContext) -> dict[str, str]:
    ctx.check()  # stop here if an operator cancelled, or the lease was lost
    image: str = ctx.payload["image"]
    return {"done": image}


def submit(q: jobq.Queue, images: list[str]) -> list[int]:
    first: int = q.enqueue({"image": images[0]}, task="resize", priority=-1, key=f"resize-{images[0]}")
    return [first, *q.enqueue_many([{"image": i} for i in images[1:]], task="resize")]


def work_one(q: jobq.Queue) -> jobq.JobStatus | None:
    job: jobq.Job | None = q.claim("worker-1", lease=30)
    if job is None:
        return None
    try:
        q.complete(job, result={"ok": True})
    except jobq.LeaseLost:
        return None
    return q.get(job.id).status


def operate(q: jobq.Queue, job_id: int) -> bool:
    if q.get(job_id).status is jobq.JobStatus.FAILED:
        return q.resubmit(job_id, actor="ann").ok
    counts: dict[str, int] = q.counts()
    return counts["PENDING"] > 0


def main(path: str) -> int:
    clock = FakeClock()
    with jobq.Queue(f"sqlite:///{path}", clock=clock) as q:
        submit(q, ["cat.png", "dog.png"])
        worker: jobq.Worker = drain(q, {"resize": resize})
        clock.advance(60)
        return worker.jobs_done
