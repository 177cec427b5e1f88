"""Processes the integration tests start: workers with test handlers, and producers.

Run as ``python tests/integration/procs.py worker|produce ...``. Side effects are appended to
``<out>/<pid>.effects`` (one job id per line) so a test can count them across processes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

# A host whose clock is off: JOBQ_TEST_CLOCK_SKEW seconds are added to the wall clock this
# process reads (time.time(), before jobq is imported), as on a host that NTP does not keep; or
# the seconds written in the file JOBQ_TEST_CLOCK_SKEW_FILE, read at every call, so that a test
# steps the clock of a running process (as a VM resumed from a snapshot sees it).
_SKEW = float(os.environ.get("JOBQ_TEST_CLOCK_SKEW", "0"))
_SKEW_FILE = os.environ.get("JOBQ_TEST_CLOCK_SKEW_FILE")
_host_time = time.time
if _SKEW:
    time.time = lambda: _host_time() + _SKEW
elif _SKEW_FILE:
    time.time = lambda: _host_time() + float(Path(_SKEW_FILE).read_text() or 0)

import jobq  # noqa: E402 - after the clock is set
from jobq.worker import JobContext, Worker  # noqa: E402

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


def stubborn(ctx: JobContext) -> dict[str, object]:
    """Ignores its lease (never calls ``ctx.check``): its first attempt runs until the test creates
    ``release-<job id>``, later attempts finish at once. Returns where and which attempt ran."""
    _marker(ctx)
    if ctx.job.attempts == 1:
        while not (OUT / f"release-{ctx.job.id}").exists():
            time.sleep(0.05)
    _effect(ctx)
    return {"host": socket.gethostname(), "attempt": ctx.job.attempts}


def polite(ctx: JobContext) -> None:
    """A long job that stops at a safe point once its worker shuts down: gives the job back."""
    _marker(ctx)
    for _ in range(72_000):  # an hour in steps
        if ctx.stopping:
            raise jobq.WorkerShutdown("polite: stopped at a safe point, the worker is shutting down")
        ctx.sleep(0.05)
    _effect(ctx)


HANDLERS = {"count": count, "slow": slow, "block": block, "gated": gated, "stubborn": stubborn, "polite": polite}


def hold(q: jobq.Queue, worker_id: str, lease: float) -> None:
    """The low-level API, as a program of its own: claim one job, write ``held-<id>``, heartbeat
    it every lease/3 until ``go-<id>`` exists (a heartbeat refused or failing is let be), then
    heartbeat and complete it once more, writing what each did to ``outcome-<id>``."""
    job = None
    while job is None:
        job = q.claim(worker_id, lease=lease)
        if job is None:
            time.sleep(0.05)
    _publish(OUT / f"held-{job.id}", worker_id)
    beat = 0.0
    while not (OUT / f"go-{job.id}").exists():
        if time.monotonic() - beat >= lease / 3:
            beat = time.monotonic()
            with contextlib.suppress(jobq.JobqError):  # LeaseLost, or StorageError while partitioned
                q.heartbeat(job)
        time.sleep(0.05)
    outcomes = []
    for name, write in (("heartbeat", lambda: q.heartbeat(job)), ("complete", lambda: q.complete(job, "late"))):
        try:
            write()
            outcomes.append(f"{name}:ok")
        except jobq.LeaseLost:
            outcomes.append(f"{name}:LeaseLost")
    _publish(OUT / f"outcome-{job.id}", " ".join(outcomes))


def _publish(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in one step: a test waits for the file to exist and then reads
    it (``write_text`` creates it empty first; a CI run read "" there)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tick(ctx: JobContext) -> None:
    """A periodic job: its slot goes to ``<pid>.slots``."""
    with open(OUT / f"{os.getpid()}.slots", "a") as f:
        f.write(f"{ctx.payload['slot']}\n")


def keyed(q: jobq.Queue, keys: int, rounds: int, scope: str, ttl: float | None, start_at: float) -> None:
    """Enqueue keys ``k0..k<keys-1>`` ``rounds`` times from the wall time ``start_at`` on (so every
    producer starts together); each (key, id) it was handed goes to ``keyed-<pid>.txt``."""
    while time.time() < start_at:
        time.sleep(0.005)
    got = []
    for _ in range(rounds):
        for k in range(keys):
            got.append(f"k{k} {q.enqueue(os.getpid(), key=f'k{k}', key_scope=scope, key_ttl=ttl)}")
    (OUT / f"keyed-{os.getpid()}.txt").write_text("\n".join(got) + "\n")


def frozenclaim(q: jobq.Queue, worker_id: str, queue: str) -> None:
    """Claim from the controlled ``queue``, freezing this process (SIGSTOP) inside the claim's
    transaction, with the queue's control row locked; once continued, write what the claim
    returned to ``claimed-<pid>`` (job ids, or the error). Freezes once: a claim run again does not."""
    import signal
    import threading

    from jobq.backends import ops

    claim_controlled = ops.claim_controlled

    def frozen_inside(*args: object, **kwargs: object) -> object:
        result = yield from claim_controlled(*args, **kwargs)  # type: ignore[arg-type]
        freezing = OUT / f"freezing-{os.getpid()}"
        if freezing.exists():
            return result  # once: this is the claim run again after the freeze
        _publish(freezing, "")
        # To this thread: the stop lands before it returns to Python (kill() of the process could
        # let this thread commit first).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        return result

    ops.claim_controlled = frozen_inside  # type: ignore[assignment]
    try:
        text = " ".join(str(job.id) for job in q.claim_many(worker_id, 1, queue=queue))
    except jobq.JobqError as exc:
        text = f"error: {exc}"
    _publish(OUT / f"claimed-{os.getpid()}", text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "produce", "hold", "keyed", "frozenclaim"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--lease", type=float, default=30)
    parser.add_argument("--grace", type=float, default=10)
    parser.add_argument("--rescue-interval", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--payload", default="{}")
    parser.add_argument("--scope", default="all")
    parser.add_argument("--ttl", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--every", type=float, default=None, help="worker: also run schedule 'tick' every N s")
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
    if args.role == "hold":
        hold(q, f"holder-{socket.gethostname()}-{os.getpid()}", args.lease)
        return
    if args.role == "frozenclaim":
        frozenclaim(q, f"frozen-{os.getpid()}", "lim")
        return
    if args.role == "keyed":
        keyed(q, args.count, args.rounds, args.scope, args.ttl, args.start_at)
        return
    if args.role == "produce":
        import json

        payload = json.loads(args.payload)
        for i in range(args.count):
            q.enqueue({**payload, "n": i}, task=payload.get("task", ""), key=f"{args.prefix}-{i}")
        return
    if args.every is not None:
        jobq.periodic(every=args.every, name="tick", catchup="all")(tick)
    handlers = {name: fn for name, fn in HANDLERS.items()}
    if args.every is not None:
        handlers["tick"] = tick
    handlers[""] = count
    Worker(q, handlers, concurrency=args.concurrency, batch=args.batch).run()


if __name__ == "__main__":
    main()
