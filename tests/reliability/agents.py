"""The processes the reliability tests start, killed or crashed on purpose.

Run as ``python tests/reliability/agents.py ROLE --db URL ...``. Roles:

- ``crashworker``: the seed's consumer (``jobq.demo.consumer.make_stamp_handler``) that exits hard with
  ``os._exit(CRASH_EXIT)`` at the crash point named in a job's payload (``"crash"``), on the job's
  first attempt only. The points are injected by wrapping, from this module, what the consumer calls
  (``jobq.demo.files`` itself is not modified): see ``CRASH_POINTS``.
- ``producer``: enqueues ``<prefix>-<i>`` with the key ``<prefix>-<i>``, appending ``key id`` to an
  acknowledgement file after each enqueue returned; a restarted producer resumes at the first key it
  never acknowledged (the one a kill may have committed without an acknowledgement).
- ``worker``: completes every job (a tiny handler), for background load.
- ``chaosworker``: completes every job after an effect it logs, with a sync or (``--async``) an
  ``async def`` handler: the kill -9 chaos test's worker.
- ``politeworker``: like ``chaosworker``, its handler works in short steps and, once its worker is
  shutting down (``ctx.stopping``), gives its job back between two steps (``jobq.WorkerShutdown``),
  logging ``<job id> <pid>`` to ``--out``/gaveback; the SIGTERM chaos test's worker.
- ``contender``: enqueue, claim, complete in a loop; writes its latencies and errors as JSON.
- ``operator``: random cancel / resubmit calls on job ids, results as JSON.
- ``prefetchworker``: the default (prefetching) worker with a fenced handler that, with
  ``--freeze``, SIGSTOPs its own process while it holds jobs claimed ahead.
- ``limitedworker``: a worker of the concurrency-limited queue ``lim`` with a fenced handler that,
  with ``--freeze``, SIGSTOPs its own process while it holds the queue's only slot.
- ``schedworker``: one scheduler tick that exits hard at a point inside a slot's transaction.
- ``powerwriter``: enqueues (with acknowledgements; every other job without a key, so the one
  statement sent alone in autocommit is cut too), claims and completes through ``CrashVFS``, a
  SQLite VFS that keeps, beside each file, the image a disk would hold if power failed now (writes
  reach it only at fsync) and "loses power" at the N-th write or sync: it applies a random subset
  of the un-synced writes to that image and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import apsw

import jobq
import jobq.demo.consumer
from jobq.demo.consumer import make_stamp_handler
from jobq.worker import JobContext, Worker

_os_write = os.write  # the crashworker patches os.write; its own log lines must not go through the patch
CRASH_EXIT = 77
POWER_EXIT = 99
CRASH_POINTS = ("after_claim", "torn_write", "after_write", "after_fsync", "before_complete", "after_complete")
"""Where a ``crashworker`` exits: handler started (claim committed); half the stamp line written;
stamp written, not yet fsynced; stamp fsynced (``stamp_file`` returned); outcome computed, completion
not yet committed; completion committed."""


def settings(args: argparse.Namespace) -> jobq.Settings:
    return jobq.Settings(
        database_url=args.db,
        lease_seconds=args.lease,
        rescue_interval_seconds=args.rescue_interval,
        poll_interval_seconds=0.1,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.2,
        shutdown_grace_seconds=5,
        data_dir=args.data_dir or "data",
        consumer_delay=args.delay,
    )


def append_line(path: str, text: str) -> None:
    """One ``write(2)`` with O_APPEND: the line is in the kernel before the next statement runs."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _os_write(fd, text.encode())
    finally:
        os.close(fd)


# -- crash-point sweep ---------------------------------------------------------------------------
def crashworker(args: argparse.Namespace) -> None:
    s = settings(args)
    q = jobq.Queue(settings=s)
    state: dict[str, Any] = {"point": None, "job": None, "in_stamp": False}
    real_write, real_fsync = os.write, os.fsync
    real_stamp = jobq.demo.consumer.stamp_file

    def crash(point: str) -> None:
        if state["point"] == point:
            append_line(args.crash_log, f"{state['job']} {point} {time.time():.6f} {os.getpid()}\n")
            os._exit(CRASH_EXIT)

    def write(fd: int, data: Any) -> int:
        if state["in_stamp"] and state["point"] == "torn_write":
            real_write(fd, bytes(data)[: max(1, len(data) // 2)])  # a torn write: half the line reached the file
            crash("torn_write")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if state["in_stamp"]:
            crash("after_write")
        real_fsync(fd)

    def stamp(*a: Any, **k: Any) -> bool:
        state["in_stamp"] = True
        try:
            written = bool(real_stamp(*a, **k))
        finally:
            state["in_stamp"] = False
        crash("after_fsync")
        return written

    # Only the stamp path runs os.write / os.fsync in this process (SQLite does its own I/O in C).
    os.write, os.fsync = write, fsync  # type: ignore[assignment]
    jobq.demo.consumer.stamp_file = stamp  # type: ignore[assignment]
    inner = make_stamp_handler(s, out=sys.stdout)

    def handler(ctx: JobContext) -> Any:
        first = ctx.job.attempts == 1 and ctx.job.run == 1
        state["point"] = ctx.job.payload.get("crash") if first else None
        state["job"] = ctx.job.id
        crash("after_claim")
        return inner(ctx)

    real_complete = q.complete_many

    def complete_many(items: Any, **options: Any) -> list[bool]:
        crash("before_complete")
        done = real_complete(items, **options)
        crash("after_complete")
        return done

    real_complete_and_claim = q.complete_many_and_claim

    def complete_many_and_claim(items: Any, *args: Any, **options: Any) -> tuple[list[bool], list[Any]]:
        # The worker's usual path: the next claim rides in the completion's transaction, so a crash
        # after it also leaves a freshly claimed job behind for the rescuer.
        crash("before_complete")
        out = real_complete_and_claim(items, *args, **options)
        crash("after_complete")
        return out

    q.complete_many = complete_many  # type: ignore[method-assign]
    q.complete_many_and_claim = complete_many_and_claim  # type: ignore[method-assign]
    Worker(q, {"stamp": as_async(handler) if args.use_async else handler}, **worker_options(args)).run()


def as_async(handler: Callable[[JobContext], Any]) -> Callable[[JobContext], Awaitable[Any]]:
    """``handler`` as an ``async def`` handler (``--async``): run on the worker's event loop, its
    blocking file or database work in a thread, as an asyncio application would write it."""

    async def run(ctx: JobContext) -> Any:
        return await asyncio.to_thread(handler, ctx)

    return run


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """One job at a time, on a thread or (``--async``) on the event loop: the crash state is per process."""
    return {"concurrency": 1, "batch": 1, "async_concurrency": 1}


# -- producers and workers -------------------------------------------------------------------------
def producer(args: argparse.Namespace) -> None:
    q = jobq.Queue(settings=settings(args))
    ack = Path(args.ack)
    done = len(ack.read_text().splitlines()) if ack.exists() else 0
    for i in range(done, args.count):
        key = f"{args.prefix}-{i}"
        job_id = q.enqueue({"key": key, "pad": "x" * args.pad}, key=key)
        append_line(args.ack, f"{key} {job_id}\n")


def worker(args: argparse.Namespace) -> None:
    q = jobq.Queue(settings=settings(args))
    Worker(q, lambda ctx: None, concurrency=2, batch=8).run()


def chaosworker(args: argparse.Namespace) -> None:
    """Runs every job with an effect: appends ``<job id> <pid>`` to ``--out``/effects (O_APPEND,
    one write) after an await, then returns the pid. ``--async``: an ``async def`` handler on the
    worker's event loop, several jobs at once; else a sync handler on threads."""
    q = jobq.Queue(settings=settings(args))
    effects = os.open(Path(args.out, "effects"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def effect(ctx: JobContext) -> int:
        _os_write(effects, f"{ctx.job.id} {os.getpid()}\n".encode())
        return os.getpid()

    async def run_async(ctx: JobContext) -> int:
        await asyncio.sleep(random.uniform(0.1, 0.3))  # several coroutines in flight when killed
        return effect(ctx)

    def run_sync(ctx: JobContext) -> int:
        ctx.sleep(random.uniform(0.1, 0.3))
        return effect(ctx)

    Worker(q, run_async if args.use_async else run_sync, concurrency=4, async_concurrency=8).run()


#: The reason of ``politeworker``'s give-backs (its handlers'), as their ``released`` events carry it.
POLITE_GIVE_BACK = "politeworker: stopped between two steps"


def politeworker(args: argparse.Namespace) -> None:
    """Runs every job in 2-6 steps of 20-60 ms, then its effect (as ``chaosworker``); between
    steps, once the worker is shutting down, gives the job back instead, before any effect."""
    q = jobq.Queue(settings=settings(args))
    effects = os.open(Path(args.out, "effects"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    gave = os.open(Path(args.out, "gaveback"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def step(ctx: JobContext) -> None:
        if ctx.stopping:
            _os_write(gave, f"{ctx.job.id} {os.getpid()}\n".encode())
            raise jobq.WorkerShutdown(POLITE_GIVE_BACK)

    def effect(ctx: JobContext) -> int:
        _os_write(effects, f"{ctx.job.id} {os.getpid()}\n".encode())
        return os.getpid()

    async def run_async(ctx: JobContext) -> int:
        for _ in range(random.randint(2, 6)):
            step(ctx)
            await ctx.asleep(random.uniform(0.02, 0.06))
        return effect(ctx)

    def run_sync(ctx: JobContext) -> int:
        for _ in range(random.randint(2, 6)):
            step(ctx)
            ctx.sleep(random.uniform(0.02, 0.06))
        return effect(ctx)

    Worker(q, run_async if args.use_async else run_sync, concurrency=4, async_concurrency=8).run()


def contender(args: argparse.Namespace) -> None:
    q = jobq.Queue(settings=settings(args))
    me = f"contender-{os.getpid()}"
    Path(args.out, f"ready-{os.getpid()}").write_text("")
    go = Path(args.out, "go")
    while not go.exists():
        time.sleep(0.01)
    lat: dict[str, list[float]] = {"enqueue": [], "claim": [], "complete": []}
    errors: list[str] = []
    claimed: list[int] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        try:
            t0 = time.perf_counter()
            q.enqueue({"from": me})
            t1 = time.perf_counter()
            job = q.claim(me)
            t2 = time.perf_counter()
            lat["enqueue"].append(t1 - t0)
            lat["claim"].append(t2 - t1)
            if job is not None:
                claimed.append(job.id)
                q.complete(job)
                lat["complete"].append(time.perf_counter() - t2)
        except Exception as exc:  # noqa: BLE001 - every error reaching a caller is what we count
            errors.append(f"{type(exc).__name__}: {exc}")
    Path(args.out, f"contender-{os.getpid()}.json").write_text(
        json.dumps({"latency": lat, "errors": errors, "claimed": claimed})
    )


def operator(args: argparse.Namespace) -> None:
    q = jobq.Queue(settings=settings(args))
    rng = random.Random()
    tally: dict[str, int] = {}
    errors: list[str] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        job_id = rng.randint(1, args.count)
        action = rng.choice(["cancel", "resubmit"])
        try:
            getattr(q, action)(job_id, actor=f"op-{os.getpid()}")
            outcome = "ok"
        except jobq.InvalidTransition:
            outcome = "refused"
        except Exception as exc:  # noqa: BLE001 - anything else is a failure the test reports
            outcome = "error"
            errors.append(f"{type(exc).__name__}: {exc}")
        tally[f"{action}_{outcome}"] = tally.get(f"{action}_{outcome}", 0) + 1
        time.sleep(rng.uniform(0, 0.02))  # pacing between clicks, not a wait for an outcome
    Path(args.out, f"operator-{os.getpid()}.json").write_text(json.dumps({"tally": tally, "errors": errors}))


def raceworker(args: argparse.Namespace) -> None:
    s = settings(args)
    q = jobq.Queue(settings=s)
    Worker(q, {"stamp": make_stamp_handler(s, out=sys.stdout)}, concurrency=2, batch=2).run()


# -- power loss ------------------------------------------------------------------------------------
class CrashVFS(apsw.VFS):  # type: ignore[misc]
    """SQLite's crash-test model as a VFS: writes reach the durable image only at xSync.

    Every tracked file (the database and its WAL) has a shadow ``<file>.durable``: the bytes a disk
    that lost power right now would hold. xWrite/xTruncate go to the real file (so this process
    reads its own writes) and to a pending list; xSync applies the pending list to the shadow. At
    the ``crash_at``-th write or sync, a random subset of the pending writes is applied (disks
    reorder and drop un-synced writes) and the process exits: the power is off.
    """

    def __init__(self, crash_at: int, seed: int) -> None:
        self.ops = 0
        self.crash_at = crash_at
        self.rng = random.Random(seed)
        self.files: list[CrashFile] = []
        super().__init__("crashvfs", base="unix", makedefault=True)

    def xOpen(self, name: Any, flags: list[int]) -> CrashFile:
        f = CrashFile(self, name, flags)
        self.files.append(f)
        return f

    def tick(self) -> None:
        self.ops += 1
        if self.ops >= self.crash_at:
            for f in self.files:
                f.power_off(self.rng)
            os._exit(POWER_EXIT)


class CrashFile(apsw.VFSFile):  # type: ignore[misc]
    def __init__(self, vfs: CrashVFS, name: Any, flags: list[int]) -> None:
        self.vfs = vfs
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        tracked = flags[0] & (
            apsw.mapping_open_flags["SQLITE_OPEN_MAIN_DB"] | apsw.mapping_open_flags["SQLITE_OPEN_WAL"]
        )
        self.shadow = f"{path}.durable" if path and tracked else None
        self.pending: list[tuple[str, int, bytes]] = []
        super().__init__("unix", name, flags)

    def xWrite(self, data: bytes, offset: int) -> None:
        if self.shadow:
            self.pending.append(("w", offset, bytes(data)))
            self.vfs.tick()
        super().xWrite(data, offset)

    def xTruncate(self, size: int) -> None:
        if self.shadow:
            self.pending.append(("t", size, b""))
        super().xTruncate(size)

    def xSync(self, flags: int) -> None:
        if self.shadow:
            self.vfs.tick()
            self._apply(self.pending)
            self.pending = []
        super().xSync(flags)

    def power_off(self, rng: random.Random) -> None:
        if self.shadow:
            self._apply([p for p in self.pending if rng.random() < 0.5])

    def _apply(self, ops: list[tuple[str, int, bytes]]) -> None:
        assert self.shadow
        fd = os.open(self.shadow, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for kind, where, data in ops:
                if kind == "w":
                    os.pwrite(fd, data, where)
                else:
                    os.ftruncate(fd, where)
        finally:
            os.close(fd)


def powerwriter(args: argparse.Namespace) -> None:
    vfs = CrashVFS(args.crash_at, args.seed)  # keep the reference: a collected VFS unregisters itself
    q = jobq.Queue(settings=settings(args))
    assert vfs.files, "the queue opened its database through CrashVFS"
    for i in range(args.count):
        key = f"k-{i}"
        # The payload names the job either way; a keyed enqueue runs in BEGIN IMMEDIATE ... COMMIT,
        # a plain one is one INSERT in autocommit: power is cut in both.
        job_id = q.enqueue({"key": key}, key=key) if i % 2 else q.enqueue({"key": key})
        append_line(args.ack, f"{key} {job_id}\n")
        if i % 3 == 2:
            job = q.claim("powerwriter")
            if job is not None:
                q.complete(job)
        if i % 40 == 39:
            q.backend.wal_checkpoint()  # type: ignore[attr-defined]
    os._exit(0)


# -- completion in the handler's transaction -------------------------------------------------------
TX_POINTS = ("before_insert", "after_insert", "after_complete", "after_commit")
"""Where a ``txworker`` SIGKILLs itself: in its transaction before its row is inserted; after the
insert; after ``ctx.complete(conn=...)`` wrote the completion, before COMMIT; after COMMIT."""


def txworker(args: argparse.Namespace) -> None:
    """A handler that inserts one application row per job and completes the job in the same
    transaction (``ctx.complete(conn=...)``). On a job's first attempt it SIGKILLs itself at the
    payload's ``"crash"`` point, or stops at its ``"pause"`` point (``before_begin`` or
    ``after_insert``): it writes ``<job id> <pid>`` to ``--out``/paused, then waits (ignoring its
    lease, as a frozen process would) until the file ``--out``/go exists."""
    from jobq.testing.appconn import app_connections

    q = jobq.Queue(settings=settings(args))
    app = app_connections(args.db)[0]  # apsw on SQLite (the same SQLite as jobq's), psycopg on PostgreSQL
    out = Path(args.out)

    def handler(ctx: JobContext) -> None:
        first = ctx.job.attempts == 1 and ctx.job.run == 1
        point = ctx.payload.get("crash") if first else None
        pause = ctx.payload.get("pause") if first else None

        def at(here: str) -> None:
            if point == here:
                append_line(args.crash_log, f"{ctx.job.id} {here} {time.time():.6f} {os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            if pause == here:
                (out / "paused").write_text(f"{ctx.job.id} {os.getpid()}")
                while not (out / "go").exists():
                    time.sleep(0.01)

        at("before_begin")
        app.begin()
        try:
            at("before_insert")
            app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (ctx.job.id, str(os.getpid())))
            at("after_insert")
            ctx.complete({"pid": os.getpid()}, conn=app.conn)
            at("after_complete")
            app.commit()
        except BaseException:
            app.rollback()
            raise
        at("after_commit")

    Worker(q, as_async(handler) if args.use_async else handler, **worker_options(args)).run()


def rescuer(args: argparse.Namespace) -> None:
    """Only rescues, every ``--rescue-interval``: the live workers of a real deployment, in a sweep
    where every worker dies at the first job it takes (a dying worker never lives to rescue)."""
    from jobq.worker.rescuer import Rescuer

    q = jobq.Queue(settings=settings(args))
    loop = Rescuer(q, f"rescuer-{os.getpid()}", args.rescue_interval)
    while True:
        loop.tick()
        time.sleep(args.rescue_interval)


# -- a worker frozen while it holds jobs claimed ahead ---------------------------------------------
def prefetchworker(args: argparse.Namespace) -> None:
    """The default worker (prefetch on, one thread) with a fenced handler: ``ensure_lease`` right
    before its effect, a line ``<job id> <pid>`` in ``<out>/effects``. With ``--freeze`` the handler
    stops its own process (SIGSTOP) at each job whose payload says ``"freeze"``, until
    ``<out>/frozen-done`` exists (the test continues it when the freeze did not land where it
    wants it). ``--prefetch-wait``: the planned wait of a job claimed ahead (the setting; the
    default 5 ms claims ahead only while handlers take well under that, on a loaded machine not
    reliably)."""
    q = jobq.Queue(settings=dataclasses.replace(settings(args), prefetch_wait_seconds=args.prefetch_wait))
    out = Path(args.out)

    def handler(ctx: JobContext) -> None:
        if args.freeze and ctx.payload.get("freeze") and not (out / "frozen-done").exists():
            # No database call here: the freeze must not wait for, or hold, the store's lock. The
            # pause lets the main loop commit the previous job's completion (and the claim ahead
            # riding with it), which it writes just as this handler starts; well under the 50 ms
            # after which jobs claimed ahead are given back. A freeze inside a transaction is
            # retried by the test (see _in_transaction there).
            time.sleep(0.025)
            append_line(str(out / "frozen"), f"{ctx.job.id}\n")
            os.kill(os.getpid(), signal.SIGSTOP)  # the whole process: main loop, heartbeats, rescuer
            # kill() returns before the group stop reaches this thread (seen: ~50 ms later, after
            # it had sent ensure_lease's heartbeat and frozen before reading the reply: that
            # answer was then 8 s stale, and the effect was doubled). Wait here for the stop.
            time.sleep(0.5)
        ctx.ensure_lease()
        append_line(str(out / "effects"), f"{ctx.job.id} {os.getpid()}\n")

    Worker(q, handler, concurrency=1).run()


# -- a worker frozen while it holds a job of a concurrency-limited queue ---------------------------
def limitedworker(args: argparse.Namespace) -> None:
    """A worker of the queue ``lim`` (the test limits it) with a fenced handler: ``ensure_lease``
    right before its effect, a line ``<job id> <pid>`` in ``<out>/effects``. With ``--freeze`` the
    handler appends the job id to ``<out>/frozen`` and stops its own process (SIGSTOP) at a job
    whose payload says ``"freeze"``; continued (SIGCONT), it finds its lease gone."""
    q = jobq.Queue(settings=settings(args))
    out = Path(args.out)

    def handler(ctx: JobContext) -> None:
        if args.freeze and ctx.payload.get("freeze"):
            # No database call here, and a pause first: the main loop's writes (the claim's
            # bookkeeping, a heartbeat) are done before the process stops, so it stops holding
            # no transaction (see prefetchworker).
            time.sleep(0.1)
            append_line(str(out / "frozen"), f"{ctx.job.id}\n")
            os.kill(os.getpid(), signal.SIGSTOP)
            time.sleep(0.5)  # the group stop reaches this thread a little after kill() returns
        ctx.ensure_lease()
        append_line(str(out / "effects"), f"{ctx.job.id} {os.getpid()}\n")

    Worker(q, handler, queues=["lim"], concurrency=1).run()


# -- a scheduler killed inside a slot's transaction --------------------------------------------------
SCHEDULE_CRASH_POINTS = ("after_advance", "after_insert", "before_commit", "after_commit")
"""Where a ``schedworker`` exits in ``Queue.fire_schedule``: the schedule's row moved off the
slot (not committed); the slot's job inserted too; every statement run, COMMIT not sent; committed."""


def schedworker(args: argparse.Namespace) -> None:
    """One scheduler tick (``Scheduler.run_due``), as a worker runs it, killing itself with
    SIGKILL at ``--point`` (one of ``SCHEDULE_CRASH_POINTS``, or none). The
    point is injected by wrapping the slot's operation (``ops.fire_schedule``) from here."""
    import jobq.backends.ops as ops
    from jobq.worker.scheduler import Scheduler

    q = jobq.Queue(settings=settings(args))

    def crash(here: str) -> None:
        if here == args.point:
            append_line(args.crash_log, f"{here} {time.time():.6f} {os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no handler, no cleanup, mid-transaction

    real_fire = ops.fire_schedule

    def fire_schedule(d: Any, *a: Any, **k: Any) -> Any:
        op = real_fire(d, *a, **k)
        inserts = {
            d.sql[name]
            for name in ("insert_job", "enqueue_keyed", "enqueue_with_events", "enqueue_uniform", "enqueue_one")
            if name in d.sql
        }
        value: Any = None
        try:
            while True:
                command = op.send(value)
                value = yield command  # the statement has run when the driver sends its rows
                if command[0] == d.sql["advance_schedule"]:
                    crash("after_advance")
                elif command[0] in inserts:  # the slot's job, in whichever form the dialect writes it
                    crash("after_insert")
        except StopIteration as stop:
            crash("before_commit")
            return stop.value

    real_queue_fire = q.fire_schedule

    def queue_fire(*a: Any, **k: Any) -> Any:
        ids = real_queue_fire(*a, **k)
        crash("after_commit")
        return ids

    ops.fire_schedule = fire_schedule  # type: ignore[assignment]
    q.fire_schedule = queue_fire  # type: ignore[method-assign]
    fired = Scheduler(q, declared={}).run_due()
    print(json.dumps(fired), flush=True)


ROLES = {
    "schedworker": schedworker,
    "prefetchworker": prefetchworker,
    "limitedworker": limitedworker,
    "rescuer": rescuer,
    "txworker": txworker,
    "crashworker": crashworker,
    "producer": producer,
    "worker": worker,
    "chaosworker": chaosworker,
    "politeworker": politeworker,
    "contender": contender,
    "operator": operator,
    "raceworker": raceworker,
    "powerwriter": powerwriter,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--db", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--lease", type=float, default=1.5)
    p.add_argument("--rescue-interval", type=float, default=0.2)
    p.add_argument("--delay", default="0-0")
    p.add_argument("--crash-log", default="crashes.log")
    p.add_argument("--ack", default="acks.log")
    p.add_argument("--prefix", default="p")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--pad", type=int, default=0)
    p.add_argument("--out", default=".")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--crash-at", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--async", dest="use_async", action="store_true", help="run the handler as async def")
    p.add_argument("--freeze", action="store_true", help="prefetchworker: SIGSTOP itself holding jobs claimed ahead")
    p.add_argument("--prefetch-wait", type=float, default=0.2)
    p.add_argument("--point", default="none", help="schedworker: where to exit (SCHEDULE_CRASH_POINTS)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    ROLES[args.role](args)


if __name__ == "__main__":
    main()
