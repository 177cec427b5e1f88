"""Processes the integration tests start: workers with test handlers, and producers.

Run as ``python tests/integration/procs.py worker|produce ...``. Side effects are appended to
``<out>/<pid>.effects`` (one job id per line) so a test can count them across processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import jobq
from jobq.worker import JobContext, Worker

OUT = Path(os.environ.get("JOBQ_TEST_OUT", "."))


def _effect(ctx: JobContext) -> None:
    with open(OUT / f"{os.getpid()}.effects", "a") as f:
        f.write(f"{ctx.job.id}\n")


def _marker(ctx: JobContext) -> None:
    (OUT / f"started-{ctx.job.id}-{os.getpid()}").write_text("")


def count(ctx: JobContext) -> None:
    _effect(ctx)


def slow(ctx: JobContext) -> None:
    _marker(ctx)
    ctx.sleep(float(ctx.payload.get("seconds", 1.0)))
    _effect(ctx)


def block(ctx: JobContext) -> None:
    _marker(ctx)
    ctx.sleep(3600)


def gated(ctx: JobContext) -> None:
    """Runs until the test creates ``release-<job id>`` in the output folder: as long as it needs."""
    _marker(ctx)
    while not (OUT / f"release-{ctx.job.id}").exists():
        ctx.sleep(0.05)
    _effect(ctx)


HANDLERS = {"count": count, "slow": slow, "block": block, "gated": gated}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "produce"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--lease", type=float, default=30)
    parser.add_argument("--grace", type=float, default=10)
    parser.add_argument("--rescue-interval", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--payload", default="{}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    settings = jobq.Settings(
        database_url=args.db,
        lease_seconds=args.lease,
        shutdown_grace_seconds=args.grace,
        rescue_interval_seconds=args.rescue_interval,
        poll_interval_seconds=0.2,
        backoff_base_seconds=0.2,
        backoff_cap_seconds=1.0,
    )
    q = jobq.Queue(settings=settings)
    if args.role == "produce":
        import json

        payload = json.loads(args.payload)
        for i in range(args.count):
            q.enqueue({**payload, "n": i}, task=payload.get("task", ""), key=f"{args.prefix}-{i}")
        return
    handlers = {name: fn for name, fn in HANDLERS.items()}
    handlers[""] = count
    Worker(q, handlers, concurrency=args.concurrency, batch=args.batch).run()


if __name__ == "__main__":
    main()
