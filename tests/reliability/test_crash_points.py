"""Item 2: crash-point sweep. A consumer exits hard (``os._exit``) at each step of its work.

Each job names its crash point in its payload; ``crashworker`` (agents.py) exits there on the job's
first attempt. The test plays supervisord: it keeps ``WORKERS`` crashworkers alive, restarting
each one that died, until every job is COMPLETED. Then, per point: no job lost (every job
COMPLETED, its file stamped), no duplicate (exactly one stamp per job and run, one completion),
and the time from the crash to the job's rescue (back to PENDING).
"""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path

import pytest
from agents import CRASH_EXIT, CRASH_POINTS
from harness import Agents, Recorder, backend_name, percentile, scale

import jobq
from jobq.demo.files import FILE_TASK, new_job_file
from jobq.demo.stamps import STAMP_RE, stamps_in

pytestmark = pytest.mark.slow
WORKERS = 3
#: A stamp line cut short by a crash mid-write (the producer's lines are lower-case words only).
TORN = re.compile(rb"^\d{4}-\d")


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_crash_point_sweep_loses_nothing_and_stamps_once(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder, handler: str
) -> None:
    per_point = scale(3, 40)
    data = tmp_path / "data"
    crash_log = tmp_path / "crashes.log"
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url, data_dir=str(data)))
    try:
        point_of: dict[int, str] = {}
        file_of: dict[int, Path] = {}
        for point in CRASH_POINTS:
            for _ in range(per_point):
                path = new_job_file(data)
                job_id = q.enqueue({"path": str(path), "crash": point}, task=FILE_TASK, key=f"file:{path.name}")
                point_of[job_id] = point
                file_of[job_id] = path

        args = ("--db", backend_url, "--data-dir", str(data), "--crash-log", str(crash_log), "--lease", "1.5")
        args += ("--async",) if handler == "async" else ()
        slots = [agents.start("crashworker", *args) for _ in range(WORKERS)]
        restarts = 0
        deadline = time.monotonic() + 60 + 3 * len(point_of)
        while True:
            counts = q.counts()
            if counts["COMPLETED"] == len(point_of):
                break
            assert counts["FAILED"] == counts["CANCELLED"] == 0, (counts, agents.logs())
            assert time.monotonic() < deadline, f"jobs not finished: {counts}\n{agents.logs()}"
            for i, proc in enumerate(slots):
                code = proc.poll()
                if code is not None:
                    assert code == CRASH_EXIT, f"a worker exited with {code}, not a planned crash\n{agents.logs()}"
                    slots[i] = agents.start("crashworker", *args)
                    restarts += 1
            time.sleep(0.05)  # supervisord's pace of restarts, not a wait for an outcome

        crashes: dict[int, tuple[str, float]] = {}
        for line in crash_log.read_text().splitlines():
            job_id, point, at, _pid = line.split()
            assert int(job_id) not in crashes, f"job {job_id} crashed twice: only its first attempt should"
            crashes[int(job_id)] = (point, float(at))

        table: dict[str, collections.Counter[str]] = {p: collections.Counter() for p in CRASH_POINTS}
        reclaim: dict[str, list[float]] = {p: [] for p in CRASH_POINTS}
        for job_id, point in point_of.items():
            job = q.get(job_id)
            row = table[point]
            row["jobs"] += 1
            row["crashed"] += job_id in crashes
            content = file_of[job_id].read_bytes()
            stamps = stamps_in(content)
            if job.status != jobq.JobStatus.COMPLETED or (job_id, 1) not in stamps:
                row["lost"] += 1
            row["duplicated"] += len(stamps) - len(set(stamps)) + sum(1 for s in stamps if s != (job_id, 1))
            completions = [e for e in q.events(job_id) if e.kind == jobq.EventKind.COMPLETED]
            row["duplicated"] += max(0, len(completions) - 1)
            row["redelivered"] += job.attempts - 1
            row["stamp_found_on_retry"] += isinstance(job.result, dict) and job.result.get("stamped") is False
            row["torn_lines"] += sum(1 for ln in content.splitlines() if TORN.match(ln) and not STAMP_RE.match(ln))
            if job_id in crashes:
                crashed_at = crashes[job_id][1]
                # Reclaimed = rescued back to PENDING by a live worker's rescuer (when it is claimed
                # again depends on the backlog ahead of it, not on the crash).
                rescues = [e.at for e in q.events(job_id) if e.kind == jobq.EventKind.RESCUED and e.at > crashed_at]
                if rescues:
                    reclaim[point].append(min(rescues) - crashed_at)
        integrity = q.backend.integrity_check() if hasattr(q.backend, "integrity_check") else None
    finally:
        q.close()

    print(
        f"\ncrash-point sweep on {backend_name(backend_url)} ({handler} handler): "
        f"{len(point_of)} jobs, {restarts} restarts"
    )
    print(f"{'point':<16}{'jobs':>6}{'crashes':>9}{'lost':>6}{'dup':>5}{'redeliv':>9}{'found':>7}{'torn':>6}  reclaim")
    for point in CRASH_POINTS:
        row = table[point]
        p50, p99 = percentile(reclaim[point], 50), percentile(reclaim[point], 99)
        shown = f"p50 {p50:.2f}s p99 {p99:.2f}s" if p50 is not None and p99 is not None else "-"
        print(
            f"{point:<16}{row['jobs']:>6}{row['crashed']:>9}{row['lost']:>6}{row['duplicated']:>5}"
            f"{row['redelivered']:>9}{row['stamp_found_on_retry']:>7}{row['torn_lines']:>6}  {shown}"
        )
        record(
            f"crash point: {point}" + (" (async handler)" if handler == "async" else ""),
            backend=backend_name(backend_url),
            jobs=row["jobs"],
            faults=row["crashed"],
            lost=row["lost"],
            duplicated=row["duplicated"],
            redelivered=row["redelivered"],
            reclaim_p50=p50,
            reclaim_p99=p99,
            integrity=integrity,
            stamp_found_on_retry=row["stamp_found_on_retry"],
            torn_lines=row["torn_lines"],
        )
    for point in CRASH_POINTS:
        row = table[point]
        # A first attempt that lost its lease first (a worker starved of CPU for a whole lease) never
        # reaches its crash point: rare, harmless, and why this is not "== jobs".
        assert row["crashed"] >= max(1, row["jobs"] // 2), f"{point}: the crashes happened ({dict(row)})"
        assert row["lost"] == 0 and row["duplicated"] == 0, (point, dict(row))
    # The points after the stamp reached the file must find it on the retry and not write it again.
    for point in ("after_write", "after_fsync", "before_complete"):
        assert table[point]["stamp_found_on_retry"] >= table[point]["crashed"], (point, dict(table[point]))
    # A torn stamp line stays a harmless fragment: the retry writes a whole stamp on its own line.
    assert table["torn_write"]["torn_lines"] == table["torn_write"]["crashed"]
    assert integrity in (None, "ok")
