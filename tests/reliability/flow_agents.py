"""The processes of the flow-control reliability test (``test_flow_limits.py``), killed on purpose.

Run as ``python tests/reliability/flow_agents.py ROLE --db URL``. Roles:

- ``worker``: a jobq worker of the three limited queues; each handler runs 10-60 ms.
- ``producer``: enqueues jobs into the three queues (the keyed ones with one of ``KEYS`` keys) until
  ``--seconds`` have passed, keeping each queue's backlog near ``BACKLOG`` so that the limits, not
  the supply, decide how much runs.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import jobq
from jobq import JobFilter, JobStatus
from jobq.worker import JobContext, Worker

QUEUES = ("conc", "keyed", "rated")
KEYS = [f"customer-{i}" for i in range(6)]
BACKLOG = 40
#: A kill can cost a job several attempts: they must never fail for it.
ATTEMPTS = 1000


def settings(url: str) -> jobq.Settings:
    return jobq.Settings(
        database_url=url,
        lease_seconds=1.5,
        rescue_interval_seconds=0.2,
        poll_interval_seconds=0.1,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.2,
        shutdown_grace_seconds=2,
    )


def worker(args: argparse.Namespace) -> None:
    def handler(ctx: JobContext) -> None:
        time.sleep(random.uniform(0.01, 0.06))

    q = jobq.Queue(settings=settings(args.db))
    Worker(q, handler, queues=QUEUES, concurrency=2).run()


def producer(args: argparse.Namespace) -> None:
    q = jobq.Queue(settings=settings(args.db))
    end = time.monotonic() + args.seconds
    rng = random.Random()
    while time.monotonic() < end:
        for queue in QUEUES:
            pending = q.count(JobFilter(statuses=(JobStatus.PENDING,), queues=(queue,)))
            if pending < BACKLOG:
                n = BACKLOG - pending
                keys = [rng.choice(KEYS) for _ in range(n)] if queue != "rated" else None
                ids = q.enqueue_many(range(n), queue=queue, concurrency_keys=keys, max_attempts=ATTEMPTS)
                with open(args.acks, "a") as acks:  # what enqueue acknowledged: none of it may be lost
                    acks.write(f"{len(ids)}\n")
        time.sleep(0.05)


ROLES = {"worker": worker, "producer": producer}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--db", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--acks", default="acks.log", help="producer: one line per enqueue_many, its job count")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    ROLES[args.role](args)


if __name__ == "__main__":
    main()
