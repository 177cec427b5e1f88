"""What is measured and how, for any system behind the adapter interface (``bench/adapters``).

Every measurement starts from a fresh, empty store (a new SQLite file or a new PostgreSQL
database). Worker processes are started with ``spawn`` (never ``fork``: a connection must not
cross a fork) and each opens its own connection before the clock starts. Throughput is
``jobs done / wall time`` from the moment all workers were released to the moment the last one
finished; a run stops when the queue is empty or its time cap is reached, whichever comes first,
so slow systems are measured on the same stored backlog without taking minutes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import multiprocessing
import multiprocessing.synchronize
import os
import queue as queue_module
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

#: One record per delivered job: (sequence number, enqueued at, claimed at), UNIX seconds.
Record = tuple[int, float, float]

PAYLOAD_TARGET_BYTES = 110
WORKER_COUNTS = (1, 2, 4)
#: Workers get this long to import and connect before a run counts as broken.
WORKER_START_SECONDS = 90.0


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does (full run vs ``--quick``)."""

    repeats: int
    enqueue_one: int
    enqueue_one_seconds: float
    batches: int
    batch_size: int
    prefill: int
    claim_seconds: float
    latency_jobs: int
    latency_rate: float
    idle_seconds: float
    #: The latency run's 1,000 samples already give a stable median; one run keeps `make bench` short.
    latency_repeats: int = 1
    #: Repeats of a row measured in turns with its raw limit (``bench.run.measure_pair``): the
    #: rows the targets read. Three left the SQLite per-job x4 ratio anywhere from 0.71x to 0.81x
    #: between runs of one night, on both sides of its 0.75x line.
    pair_repeats: int = 1


FULL = Sizes(
    repeats=3,
    pair_repeats=5,
    enqueue_one=3_000,
    enqueue_one_seconds=4.0,
    batches=10,
    batch_size=1_000,
    prefill=20_000,
    claim_seconds=3.0,
    latency_jobs=1_000,
    latency_rate=200.0,
    idle_seconds=5.0,
)
QUICK = Sizes(
    repeats=1,
    enqueue_one=500,
    enqueue_one_seconds=2.0,
    batches=3,
    batch_size=1_000,
    prefill=2_000,
    claim_seconds=2.0,
    latency_jobs=100,
    latency_rate=200.0,
    idle_seconds=1.5,
)


def make_payload(n: int, t: float = 0.0) -> dict[str, Any]:
    """A ~110-byte JSON payload carrying its sequence number and enqueue time."""
    base = {"n": n, "t": round(t, 6), "path": f"data/files/job-{n:07d}.txt", "pad": ""}
    size = len(json.dumps(base, separators=(",", ":")))
    base["pad"] = "x" * max(0, PAYLOAD_TARGET_BYTES - size)
    return base


def record_of(payload: dict[str, Any], claimed_at: float) -> Record:
    return (int(payload["n"]), float(payload["t"]), claimed_at)


def is_lock_error(exc: BaseException) -> bool:
    """A "database is locked" / busy / lock-timeout error that reached the caller."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("locked", "busy", "lock timeout", "deadlock", "locknotavailable"))


def load_factory(factory: str) -> Callable[..., Any]:
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class System:
    """One row of the table: an adapter class and its options."""

    key: str
    label: str
    factory: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    group: str = "sqlite"


class NotSupported(Exception):
    """The system has no such operation (e.g. no batch enqueue): the cell reads n/a."""


# -- results -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Measure:
    """One metric of one system: a value per repeat, plus the safety counters."""

    values: list[float] = dataclasses.field(default_factory=list)
    extra: list[float] = dataclasses.field(default_factory=list)  # p99 next to p50 for latency
    duplicates: int = 0
    lock_errors: int = 0
    jobs: int = 0
    note: str = ""
    #: CPU microseconds per job of each claim run: the workers' own processes (all threads) plus
    #: the processes they run beside them (the observed row's exporter), over the run only.
    cpu_us_per_job: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def add(self, other: Measure) -> None:
        """``other``'s repeats after this one's (a metric measured one repeat at a time)."""
        self.values += other.values
        self.extra += other.extra
        self.cpu_us_per_job += other.cpu_us_per_job
        self.duplicates += other.duplicates
        self.lock_errors += other.lock_errors
        self.jobs += other.jobs
        self.note = self.note or other.note

    @property
    def extra_median(self) -> float | None:
        return statistics.median(self.extra) if self.extra else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_us_per_job) if self.cpu_us_per_job else None


@dataclasses.dataclass
class RowResult:
    system: System
    note: str = ""
    safe: bool = True
    durability: str | None = None
    metrics: dict[str, Measure] = dataclasses.field(default_factory=dict)
    #: The raw row this one was measured interleaved with (``System.options["against"]``), and
    #: per metric its (this row's, raw's) value of each repeat: the pairs its ratios are read from.
    against: str | None = None
    pairs: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)


# -- the worker process ---------------------------------------------------------------------------
def side_cpu_seconds(consumer: Any) -> float:
    """CPU seconds so far of the processes a consumer runs beside itself (0 when none)."""
    probe = getattr(consumer, "side_cpu_seconds", None)
    return float(probe()) if probe is not None else 0.0


def consume(
    consumer: Any, until: float, drain: bool, stop: multiprocessing.synchronize.Event
) -> tuple[list[Record], int, str]:
    """Claim+complete until empty (``drain``) or ``stop``/``until``; count lock errors."""
    records: list[Record] = []
    lock_errors = 0
    while time.time() < until and not stop.is_set():
        try:
            got = consumer.take()
        except Exception as exc:  # noqa: BLE001 - a crash of the system under test is a result
            if is_lock_error(exc):
                lock_errors += 1
                continue
            return records, lock_errors, f"{type(exc).__name__}: {exc}"[:300]
        if got:
            records.extend(got)
        elif drain:
            break
        else:
            consumer.wait(0.2)
    return records, lock_errors, ""


def worker_main(
    factory: str,
    options: dict[str, Any],
    env: dict[str, Any],
    index: int,
    drain: bool,
    seconds: float,
    ready: multiprocessing.Queue[Any],
    go: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[Any],
) -> None:
    """Entry point of a spawned worker: connect, report ready, wait for go, consume, report."""
    try:
        adapter = load_factory(factory)(options, env)
        consumer = adapter.consumer(index)
    except Exception as exc:  # noqa: BLE001 - reported as the row's note
        ready.put((index, f"{type(exc).__name__}: {exc}"[:300]))
        return
    ready.put((index, ""))
    go.wait()
    start = time.time()
    # CPU of this process (every thread) and of its side processes, over the run only: robust
    # where wall-clock throughput is not (a loaded machine slows both rows, not their CPU per job).
    cpu0 = time.process_time() + side_cpu_seconds(consumer)
    runner = getattr(consumer, "run_drain", None)
    if drain and runner is not None:  # systems whose own worker loop drains the queue
        records, lock_errors, error = runner(start + seconds)
        # Their loops linger after the last job (drain checks, buffered acks, shutdown): count to
        # the last job run, which favours them slightly.
        end = max((r[2] for r in records), default=time.time())
    elif not drain and hasattr(consumer, "run_until_stopped"):
        records, lock_errors, error = consumer.run_until_stopped(stop)
        end = time.time()
    else:
        records, lock_errors, error = consume(consumer, start + seconds, drain, stop)
        end = time.time()
    settle = getattr(consumer, "settle", None)
    if settle is not None:  # side processes finish the run's work (an exporter counts its events)
        settle()
    cpu = time.process_time() + side_cpu_seconds(consumer) - cpu0
    results.put((index, records, lock_errors, error, start, end, cpu))
    try:
        consumer.close()
        adapter.close()
    except Exception:  # noqa: BLE001 - closing after the measurement must not hide it
        pass


@dataclasses.dataclass
class Pool:
    """N spawned worker processes, released together."""

    procs: list[multiprocessing.process.BaseProcess]
    ready: Any
    go: Any
    stop: Any
    results: Any

    @classmethod
    def start(cls, system: System, env: dict[str, Any], workers: int, drain: bool, seconds: float) -> Pool:
        ctx = multiprocessing.get_context("spawn")
        ready, results = ctx.Queue(), ctx.Queue()
        go, stop = ctx.Event(), ctx.Event()
        procs = [
            ctx.Process(
                target=worker_main,
                args=(system.factory, system.options, env, i, drain, seconds, ready, go, stop, results),
                daemon=True,
            )
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        return cls(procs, ready, go, stop, results)

    def wait_ready(self) -> str:
        errors = []
        for _ in self.procs:
            try:
                _, error = self.ready.get(timeout=WORKER_START_SECONDS)
            except queue_module.Empty:
                return "a worker did not start in time"
            if error:
                errors.append(error)
        return errors[0] if errors else ""

    def collect(self, timeout: float) -> list[tuple[int, list[Record], int, str, float, float, float]]:
        out = []
        deadline = time.time() + timeout
        for _ in self.procs:
            try:
                out.append(self.results.get(timeout=max(0.1, deadline - time.time())))
            except queue_module.Empty:
                break
        return out

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        for p in self.procs:
            p.join(timeout=10)
        for p in self.procs:  # only our own children, by their Process handle
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


# -- measurements -------------------------------------------------------------------------------
class Bench:
    """Runs the measurements of one system; ``env_for`` hands out a fresh store per run."""

    def __init__(self, sizes: Sizes, env_for: Callable[[System], dict[str, Any]], log: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.env_for = env_for
        self.log = log
        self._seq = 0

    def _fresh(self, system: System) -> tuple[Any, dict[str, Any]]:
        env = self.env_for(system)
        adapter = load_factory(system.factory)(system.options, env)
        adapter.setup()
        return adapter, env

    def _payloads(self, count: int) -> list[dict[str, Any]]:
        start = self._seq
        self._seq += count
        return [make_payload(n) for n in range(start, start + count)]

    def enqueue_one(self, system: System) -> Measure:
        m = Measure()
        for _ in range(self.sizes.repeats):
            adapter, _ = self._fresh(system)
            try:
                payloads = self._payloads(self.sizes.enqueue_one)
                cap = time.perf_counter() + self.sizes.enqueue_one_seconds
                t0 = time.perf_counter()
                done = 0
                for p in payloads:
                    m.lock_errors += _retrying(adapter.enqueue, p)
                    done += 1
                    if done % 100 == 0 and time.perf_counter() > cap:
                        break
                m.values.append(done / (time.perf_counter() - t0))
                m.jobs += done
            finally:
                adapter.close()
        return m

    def enqueue_batch(self, system: System) -> Measure:
        m = Measure()
        for _ in range(self.sizes.repeats):
            adapter, _ = self._fresh(system)
            try:
                chunks = [self._payloads(self.sizes.batch_size) for _ in range(self.sizes.batches)]
                t0 = time.perf_counter()
                for chunk in chunks:
                    m.lock_errors += _retrying(adapter.enqueue_batch, chunk)
                m.values.append(self.sizes.batches * self.sizes.batch_size / (time.perf_counter() - t0))
                m.jobs += self.sizes.batches * self.sizes.batch_size
            except NotSupported:
                return Measure(note="n/a")
            finally:
                adapter.close()
        return m

    def claim_complete(self, system: System, workers: int) -> Measure:
        m = Measure()
        for _ in range(self.sizes.repeats):
            adapter, env = self._fresh(system)
            try:
                adapter.prefill(self._payloads(self.sizes.prefill))
            finally:
                adapter.close()
            pool = Pool.start(system, env, workers, drain=True, seconds=self.sizes.claim_seconds)
            try:
                error = pool.wait_ready()
                if error:
                    return Measure(note=f"error: {error}")
                t0 = time.time()
                pool.go.set()
                results = pool.collect(self.sizes.claim_seconds + 120)
            finally:
                pool.close()
            if len(results) < workers:
                return Measure(note="error: a worker process died")
            records = [r for res in results for r in res[1]]
            errors = [res[3] for res in results if res[3]]
            if errors:
                m.note = f"error: {errors[0]}"
            seen = {r[0] for r in records}
            m.duplicates += len(records) - len(seen)
            m.lock_errors += sum(res[2] for res in results)
            m.jobs += len(seen)
            elapsed = max(res[5] for res in results) - t0
            m.values.append(len(seen) / elapsed if elapsed > 0 else 0.0)
            if seen:
                m.cpu_us_per_job.append(1e6 * sum(res[6] for res in results) / len(seen))
        return m

    def latency_and_idle(self, system: System) -> tuple[Measure, Measure]:
        """One waiting worker: its idle CPU first, then enqueue-to-claim latency at a fixed rate."""
        lat, idle = Measure(), Measure()
        for _ in range(self.sizes.latency_repeats):
            adapter, env = self._fresh(system)
            pool = Pool.start(system, env, 1, drain=False, seconds=3600)
            try:
                error = pool.wait_ready()
                if error:
                    note = f"error: {error}"
                    return Measure(note=note), Measure(note=note)
                pool.go.set()
                time.sleep(0.3)  # let it settle into its idle wait
                pid = pool.procs[0].pid
                assert pid is not None
                idle.values.append(cpu_percent(pid, self.sizes.idle_seconds))
                interval = 1.0 / self.sizes.latency_rate
                t_start = time.time()
                for i in range(self.sizes.latency_jobs):
                    delay = t_start + i * interval - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    payload = make_payload(self._seq, time.time())
                    self._seq += 1
                    lat.lock_errors += _retrying(adapter.enqueue, payload)
                time.sleep(0.5)  # the last jobs' latency is well under this
                pool.stop.set()
                results = pool.collect(30)
            finally:
                adapter.close()
                pool.close()
            if not results:
                code = pool.procs[0].exitcode
                note = "error: the waiting worker " + (
                    "did not stop in time" if code is None else f"died (exit {code})"
                )
                return Measure(note=note), Measure(note=note)
            _, records, lock_errors, error, _, _, _ = results[0]
            if error:
                lat.note = f"error: {error}"
            lat.lock_errors += lock_errors
            waits = sorted((claimed - enq) * 1000.0 for _, enq, claimed in records)
            lat.duplicates += len(records) - len({r[0] for r in records})
            lat.jobs += len(waits)
            if len(waits) < self.sizes.latency_jobs:
                lat.note = lat.note or f"only {len(waits)} of {self.sizes.latency_jobs} jobs claimed"
            if waits:
                lat.values.append(percentile(waits, 50))
                lat.extra.append(percentile(waits, 99))
        return lat, idle


def _retrying(call: Callable[[Any], Any], arg: Any, attempts: int = 50) -> int:
    """Run ``call(arg)``; count and retry lock errors that reach the caller. Returns the count."""
    errors = 0
    while True:
        try:
            call(arg)
            return errors
        except Exception as exc:
            if not is_lock_error(exc) or errors >= attempts:
                raise
            errors += 1


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_percent(pid: int, seconds: float) -> float:
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
