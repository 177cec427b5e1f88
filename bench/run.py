"""``python -m bench [--quick] [--only KEY,...]``: measure every system, print and write the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

from bench import report, speed
from bench.core import FULL, QUICK, WORKER_COUNTS, Bench, Measure, RowResult, System, load_factory

RAW = "bench.adapters.raw_sqlite:RawSqlite"
JOBQ = "bench.adapters.jobq_adapter:Jobq"
ONLY_CLAIMS = {"skip": ["enqueue", "latency"]}


def systems() -> list[System]:
    """Every row of the table, in order. ``skip`` names metric groups a row does not repeat;
    ``against`` the raw limit a row is measured in turns with (``measure_pair``)."""
    rows = [
        System("raw-normal", "raw SQLite, synchronous=NORMAL (no library)", RAW, {"synchronous": "NORMAL"}),
        System("raw-full", "raw SQLite, synchronous=FULL (no library)", RAW, {"synchronous": "FULL"}),
        System(
            "raw-normal-b100",
            "raw SQLite NORMAL, 100 claims per txn",
            RAW,
            {"synchronous": "NORMAL", "batch": 100, **ONLY_CLAIMS},
        ),
        System(
            "raw-full-b100",
            "raw SQLite FULL, 100 claims per txn",
            RAW,
            {"synchronous": "FULL", "batch": 100, **ONLY_CLAIMS},
        ),
        System(
            "jobq-full",
            "jobq SQLite, default (FULL), per-job API",
            JOBQ,
            {"synchronous": "FULL", "against": "raw-full"},
        ),
        System(
            "jobq-normal",
            "jobq SQLite, NORMAL, per-job API",
            JOBQ,
            {"synchronous": "NORMAL", "against": "raw-normal"},
        ),
        System(
            "jobq-full-batched",
            "jobq SQLite, FULL, claim_many(100) + complete_many",
            JOBQ,
            {"synchronous": "FULL", "mode": "batched", **ONLY_CLAIMS},
        ),
        System(
            "jobq-normal-batched",
            "jobq SQLite, NORMAL, claim_many(100) + complete_many",
            JOBQ,
            {"synchronous": "NORMAL", "mode": "batched", **ONLY_CLAIMS},
        ),
        System(
            "jobq-worker",
            "jobq SQLite, default (FULL), jobq.worker.Worker(batch=100)",
            "bench.adapters.jobq_worker:JobqWorker",
            {"synchronous": "FULL", "skip": ["enqueue"], "against": "raw-full-b100"},
        ),
        System(
            "jobq-worker-default",
            "jobq SQLite, default (FULL), jobq.worker.Worker() with default settings",
            "bench.adapters.jobq_worker:JobqWorker",
            {"synchronous": "FULL", "batch": None, "skip": ["enqueue"]},
        ),
        System(
            "jobq-worker-observed",
            "jobq-worker + JSON logs, progress calls, jobq metrics scraped every second",
            "bench.adapters.jobq_worker:JobqWorker",
            {"synchronous": "FULL", "skip": ["enqueue"], "observe": True},
        ),
        System(
            "huey-full",
            "huey SqliteHuey, default (FULL; deletes at dequeue: at-most-once)",
            "bench.adapters.huey_adapter:HueyAdapter",
            {"synchronous": "FULL"},
        ),
        System(
            "huey-normal",
            "huey SqliteHuey, NORMAL (deletes at dequeue: at-most-once)",
            "bench.adapters.huey_adapter:HueyAdapter",
            {"synchronous": "NORMAL"},
        ),
        System(
            "persistqueue",
            "persist-queue SQLiteAckQueue, NORMAL",
            "bench.adapters.persistqueue_adapter:PersistQueue",
            {"synchronous": "NORMAL"},
        ),
        System("litequeue", "litequeue (NORMAL)", "bench.adapters.litequeue_adapter:LiteQueueAdapter"),
        System(
            "raw-pg",
            "raw PostgreSQL, SKIP LOCKED (no library)",
            "bench.adapters.raw_postgres:RawPostgres",
            group="postgres",
        ),
        System(
            "jobq-pg",
            "jobq PostgreSQL, per-job API",
            JOBQ,
            {"backend": "postgres", "against": "raw-pg"},
            group="postgres",
        ),
        System(
            "jobq-pg-batched",
            "jobq PostgreSQL, claim_many(100) + complete_many",
            JOBQ,
            {"backend": "postgres", "mode": "batched", **ONLY_CLAIMS},
            group="postgres",
        ),
        System(
            "jobq-pg-worker",
            "jobq PostgreSQL, jobq.worker.Worker(batch=100)",
            "bench.adapters.jobq_worker:JobqWorker",
            {"backend": "postgres", "skip": ["enqueue"]},
            group="postgres",
        ),
        System(
            "jobq-pg-worker-default",
            "jobq PostgreSQL, jobq.worker.Worker() with default settings",
            "bench.adapters.jobq_worker:JobqWorker",
            {"backend": "postgres", "batch": None, "skip": ["enqueue"]},
            group="postgres",
        ),
        System(
            "pgqueuer",
            "pgqueuer (PostgreSQL)",
            "bench.adapters.pgqueuer_adapter:PgQueuerAdapter",
            {"skip": ["latency"]},
            group="postgres",
        ),
        System(
            "procrastinate",
            "procrastinate (PostgreSQL)",
            "bench.adapters.procrastinate_adapter:Procrastinate",
            {"skip": ["latency"]},
            group="postgres",
        ),
    ]
    return rows


class Envs:
    """Hands out a fresh store per measurement: a new SQLite file or a new PostgreSQL database."""

    def __init__(self, workdir: str, pg: Any) -> None:
        self.workdir = workdir
        self.pg = pg
        self.counter = 0
        self.database: str | None = None

    def __call__(self, system: System) -> dict[str, Any]:
        self.counter += 1
        run = f"{system.key.replace('-', '_')}_{self.counter}"
        env: dict[str, Any] = {"workdir": self.workdir, "run": run, "dsn_base": self.pg.dsn_base if self.pg else None}
        self.close()
        if system.group == "postgres" and self.pg is not None:
            self.pg.fresh_database(run)
            self.database = run
        else:  # drop the previous runs' files: a full run would otherwise fill the disk
            for name in os.listdir(self.workdir):
                if name.endswith((".db", ".db-wal", ".db-shm")) or name.startswith("pq_"):
                    path = os.path.join(self.workdir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return env

    def close(self) -> None:
        """Drop the previous run's PostgreSQL database. Left behind, each of the ~100 databases of
        a full run (tens of thousands of updated rows each) was work for autovacuum while the
        rows and sections after it were measured, on the same two cores."""
        if self.database is not None and self.pg is not None:
            self.pg.drop_database(self.database)
        self.database = None


def _row(system: System, env_probe: dict[str, Any]) -> RowResult:
    """A row to fill, or one that says why its system cannot run here."""
    row = RowResult(system)
    cls = load_factory(system.factory)
    reason = cls.unavailable(system.options, env_probe)
    if reason:
        row.note = reason
        return row
    row.safe = bool(cls.safe)
    row.durability = getattr(cls(system.options, env_probe), "durability", None)
    return row


def _steps(bench: Bench, system: System) -> list[tuple[str, Any]]:
    skip = set(system.options.get("skip", ()))
    steps: list[tuple[str, Any]] = []
    if "enqueue" not in skip:
        steps += [("enqueue_one", bench.enqueue_one), ("enqueue_batch", bench.enqueue_batch)]
    steps += [(f"claim_{n}", lambda s, n=n: bench.claim_complete(s, n)) for n in WORKER_COUNTS]
    return steps


def _step(row: RowResult, step: Any, log: Any) -> Measure:
    try:
        return step(row.system)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - one failing peer is a row note, not a crash
        log(traceback.format_exc())
        return Measure(note=f"error: {type(exc).__name__}: {exc}"[:300])


def _latency(bench: Bench, row: RowResult, log: Any, who: str = "") -> None:
    if "latency" in set(row.system.options.get("skip", ())):
        return
    try:
        row.metrics["latency"], row.metrics["idle_cpu"] = bench.latency_and_idle(row.system)
    except Exception as exc:  # noqa: BLE001
        note = f"error: {type(exc).__name__}: {exc}"[:300]
        row.metrics["latency"], row.metrics["idle_cpu"] = Measure(note=note), Measure(note=note)
        log(traceback.format_exc())
    lat, cpu = report.latency_cell(row.metrics["latency"]), report.cpu_cell(row.metrics["idle_cpu"])
    log(f"  latency{who}: {lat}, idle CPU {cpu}")


def measure(bench: Bench, system: System, env_probe: dict[str, Any], log: Any) -> RowResult:
    row = _row(system, env_probe)
    if row.note:
        return row
    for name, step in _steps(bench, system):
        t0 = time.perf_counter()
        row.metrics[name] = _step(row, step, log)
        log(f"  {name}: {report.cell(row.metrics[name])} ({time.perf_counter() - t0:.1f} s)")
    _latency(bench, row, log)
    return row


def measure_pair(
    bench: Bench, one_repeat: Bench, system: System, raw: System, env_probe: dict[str, Any], log: Any
) -> tuple[RowResult, RowResult]:
    """``system`` and its raw limit ``raw``, one repeat at a time and in turns (raw first, then
    ``system`` first, and so on), so that each repeat's two runs are seconds apart rather than
    minutes: measured one row after the other, the machine's drift in between moved the ratio of
    PostgreSQL's per-job rows from 0.30x to 0.85x between runs. ``one_repeat`` measures one repeat,
    ``bench.sizes.pair_repeats`` times. The ratios are then the median of the repeats' own
    (``RowResult.pairs``)."""
    mine, limit = _row(system, env_probe), _row(raw, env_probe)
    if mine.note or limit.note:  # one of them cannot run here: each measured on its own
        return measure(bench, system, env_probe, log), measure(bench, raw, env_probe, log)
    mine.against = raw.key
    steps = dict(_steps(one_repeat, raw))
    for name, step in _steps(one_repeat, system):
        if name not in steps:
            continue
        t0 = time.perf_counter()
        got = {system.key: Measure(), raw.key: Measure()}
        for r in range(bench.sizes.pair_repeats):
            turn = [(mine, step), (limit, steps[name])]
            values: dict[str, float | None] = {}
            for row, run in turn if r % 2 else turn[::-1]:
                m = _step(row, run, log)
                got[row.system.key].add(m)
                values[row.system.key] = m.median
            a, b = values.get(system.key), values.get(raw.key)
            if a is not None and b:
                mine.pairs.setdefault(name, []).append((a, b))
        mine.metrics[name], limit.metrics[name] = got[system.key], got[raw.key]
        cells = f"{report.cell(got[system.key])} against {report.cell(got[raw.key])}"
        log(
            f"  {name}: {cells}, paired ratio {report.fmt_ratio(report.paired_ratio(mine, name))} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    _latency(bench, mine, log, f" ({system.key})")
    _latency(bench, limit, log, f" ({raw.key})")
    return mine, limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (a minute or two)")
    parser.add_argument(
        "--only", default="", help="comma-separated row keys (default: all), 'scale' for the scale section; see --list"
    )
    parser.add_argument("--list", action="store_true", help="print the row keys and exit")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale section (10M stored jobs; 1M --quick)")
    parser.add_argument("--no-apps", action="store_true", help="skip the apps' render time")
    parser.add_argument("--no-asyncio", action="store_true", help="skip the asyncio figures (async handlers, wait)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile of jobq's hot path")
    parser.add_argument("--no-flow", action="store_true", help="skip the flow-control figures (a limited queue)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the interleaved observability-overhead rounds")
    parser.add_argument("--out", default="docs", help="where benchmarks.md and benchmarks.png go ('' : nowhere)")
    parser.add_argument(
        "--keep-moved",
        action="store_true",
        help="write the report to --out even when the machine's speed moved during the run",
    )
    args = parser.parse_args(argv)
    rows = systems()
    if args.list:
        for s in rows:
            print(f"{s.key:22} {s.label}")
        return 0
    # The scale section runs in a full run, or when --only names "scale" (it fills 10M jobs).
    scale = not args.no_scale
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        scale = scale and "scale" in wanted
        wanted.discard("scale")
        unknown = wanted - {s.key for s in rows}
        if unknown:
            print(f"bench: unknown row key(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
            return 2
        rows = [s for s in rows if s.key in wanted]
    sizes = QUICK if args.quick else FULL

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    results: list[RowResult] = []
    extras: dict[str, Any] = {}
    pg = None
    workdir = tempfile.mkdtemp(prefix="jobq-bench-")
    try:
        extras["speed_start"] = speed.probe(workdir)  # in the try: the workdir goes also if it fails
        log(f"machine speed at the start: {extras['speed_start'].text()}")
        if not args.no_postgres and (scale or any(s.group == "postgres" for s in rows)):
            from bench.pg import start_postgres

            try:
                pg = start_postgres()
                log(f"PostgreSQL {pg.version} started on {pg.dsn_base}")
            except Exception as exc:  # noqa: BLE001 - the PostgreSQL rows then say why
                extras["postgres_error"] = f"{type(exc).__name__}: {exc}"
                log(f"PostgreSQL not available: {exc}")
        envs = Envs(workdir, pg)
        bench = Bench(sizes, envs, log)
        one_repeat = Bench(dataclasses.replace(sizes, repeats=1), envs, log)
        by_key = {s.key: s for s in rows}
        # A row with an "against" raw row in this run is measured in turns with it (measure_pair);
        # a raw row is the "against" of one row at most.
        paired = {s.options["against"]: s for s in rows if s.options.get("against") in by_key}
        assert len(paired) == len([s for s in rows if s.options.get("against") in by_key])
        for system in rows:
            if system.key in paired:
                continue  # measured with the row it is the limit of
            log(f"{system.key}: {system.label}")
            if system.group == "postgres" and pg is None:
                results.append(RowResult(system, note=extras.get("postgres_error", "skipped (--no-postgres)")))
                continue
            probe = {"workdir": workdir, "run": "probe", "dsn_base": pg.dsn_base if pg else None}
            raw = by_key.get(system.options.get("against", ""))
            if raw is not None:
                log(f"  in turns with {raw.key}: {raw.label}")
                results += measure_pair(bench, one_repeat, system, raw, probe, log)
            else:
                results.append(measure(bench, system, probe, log))
        order = [s.key for s in rows]
        results.sort(key=lambda r: order.index(r.system.key))
        envs.close()
        if pg is not None:
            extras["postgres_version"] = pg.version
        if not args.no_asyncio:
            from bench.asyncio_rows import measure_asyncio

            log("asyncio: async handlers, Queue.wait")
            extras["asyncio"] = measure_asyncio(workdir, pg, args.quick, log)
        if not args.no_flow:
            from bench.flow_rows import measure_flow

            if pg is not None:
                # A server of its own: the claims' p99 is judged against 20 ms, and the server the
                # rows above used can still be busy with what they left (the run of 2026-12-08
                # 02:02: p50 35 ms, p99 58 ms; 3.1 / 8.2 ms right after on a new server, 3.1 / 8.6
                # after the PostgreSQL rows alone). Stopping it ends that work.
                from bench.pg import start_postgres

                pg.stop()
                pg = None  # stopped: not stopped again below if the new one fails to start
                pg = start_postgres()
                log(f"PostgreSQL restarted for the flow-control claims on {pg.dsn_base}")
            log("flow control: 20,000 due jobs, a concurrency limit of 4")
            extras["flow"] = measure_flow(workdir, pg, args.quick, log)
        if scale:
            # After the other PostgreSQL sections: its 10,000,000 rows leave the server busy for
            # minutes (autovacuum, checkpoints). (The flow-control claims measured slow behind it,
            # p50 40 ms, and as slow before it, 70 ms, while the rows' ~100 databases were left
            # behind for autovacuum; dropped now (Envs.close), p50 6 ms in the run of 21:54.)
            from bench.scale import run_scale

            log("scale: claim+complete and reads with many stored jobs")
            extras["scale"] = run_scale(workdir, pg, args.quick, log)
        if pg is not None:
            # No section below uses PostgreSQL. Stopped now, its background work after the scale
            # section's 10,000,000 rows (autovacuum, checkpoints) no longer shares this machine's
            # two cores with the worker, the browser and the apps' servers measured below.
            pg.stop()
            pg = None
        if not args.no_overhead:
            from bench.overhead import OVERHEAD_PREFILL, OVERHEAD_ROUNDS
            from bench.overhead import run as measure_overhead

            log("observability overhead: the plain and the observed worker, interleaved")
            extras["overhead"] = measure_overhead(
                1 if args.quick else OVERHEAD_ROUNDS,
                WORKER_COUNTS,
                False,
                sizes.prefill if args.quick else OVERHEAD_PREFILL,
                log,
            )
            from bench.overhead import attribute

            log("observability overhead: each part's own cost (callgrind, the exporter's CPU)")
            extras["overhead_attributed"] = attribute(log, *((1_000, 20_000) if args.quick else ()))
        if not args.no_apps:
            from bench.apps import measure_apps

            log("apps: render time")
            extras["apps"] = measure_apps(workdir, 10_000 if args.quick else 125_000, log)
        if not args.no_profile:
            from bench.profiling import profile_jobq

            log("profile: jobq claim+complete loop")
            extras["profile"] = profile_jobq(workdir, 1_000 if args.quick else 5_000)
        extras["speed_end"] = speed.probe(workdir)
        log(f"machine speed at the end: {extras['speed_end'].text()}")
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    extras["elapsed_s"] = time.perf_counter() - t0
    extras["mode"] = (
        "quick (1 repeat, small sizes)"
        if args.quick
        else f"full (median of {sizes.repeats}; rows measured in turns with their raw limit: of {sizes.pair_repeats})"
    )
    extras["sizes"] = sizes
    extras["date"] = started
    print(report.table(results))
    print("\n".join(report.footnotes(results)))
    print()
    print(report.ratios_text(results))
    if args.out:
        out, why = report_dir(args.out, extras, keep_moved=args.keep_moved)
        if why:
            log(why)
        md, png = report.write(results, extras, out)
        log(f"wrote {md} and {png} in {extras['elapsed_s']:.0f} s")
    return 0


def report_dir(out: str, extras: dict[str, Any], *, keep_moved: bool) -> tuple[str, str | None]:
    """Where the report goes, and why not ``out`` (None: it goes there). A run during which the
    machine's speed moved by more than ``speed.MOVED`` (a throttled machine: every figure with a
    unit moved with it, and the ratios of rows measured at different moments too) does not
    replace the table in ``out``: its report goes to a new directory outside it, to be read and
    compared, unless ``keep_moved``."""
    moved = report.speed_moved(extras)
    if not moved or keep_moved:
        return out, None
    elsewhere = tempfile.mkdtemp(prefix="jobq-bench-moved-")
    why = (
        f"the machine's speed moved during the run ({', '.join(moved)}): {out}/benchmarks.md is left as it"
        f" was and this run's report goes to {elsewhere} (--keep-moved writes it to {out})"
    )
    return elsewhere, why
