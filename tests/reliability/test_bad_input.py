"""Item 11: bad input. Hypothesis and a fixed list against ``Queue.enqueue``, ``jobq.demo`` and the CLI.

Every input is either stored exactly as given (what JSON keeps of it) or refused with
``InvalidPayload`` and a one-line message; nothing else may escape, nothing outside the data root
is written, refused input writes nothing, and storage stays bounded under a flood.
(The path cases that are not text fuzzing, such as FIFOs, devices, symlink swaps and the queue's own
files, are in tests/unit/test_files.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Recorder, backend_name, scale
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobq
from jobq.demo.files import stamp_file
from jobq.demo.paths import FileMissing, UnsafePath, resolve_job_path

JOBQ = Path(sys.executable).parent / "jobq"
NO_SURROGATES = st.characters(exclude_categories=("Cs",))
TEXT = st.text(NO_SURROGATES, max_size=300)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=20,
)
NOT_JSON = st.sampled_from([b"bytes", {1, 2}, object(), float("inf"), {"k": float("nan")}, {(1, 2): "tuple key"}])
SQLISH = [
    "'; DROP TABLE jobs; --",
    "x' OR '1'='1",
    '" OR 1=1 --',
    "%_\\%",
    "'); DELETE FROM job_events; SELECT ('",
    "PENDING' WHERE 1; UPDATE jobs SET status='COMPLETED",
]


@pytest.fixture
def fuzz_queue(backend_url: str) -> Iterator[jobq.Queue]:
    q = jobq.Queue(backend_url)
    yield q
    q.close()


def roundtrip(q: jobq.Queue, payload: Any, **kw: Any) -> str:
    """Enqueue; return "stored" (and check it reads back the same) or "refused" (InvalidPayload)."""
    try:
        job_id = q.enqueue(payload, **kw)
    except jobq.InvalidPayload as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return "refused"
    job = q.get(job_id)
    assert job.payload == json.loads(json.dumps(payload)), (payload, job.payload)
    if "task" in kw:
        assert job.task == kw["task"]
    if "queue" in kw:
        assert job.queue == kw["queue"]
    if kw.get("key") is not None:
        assert job.idempotency_key == kw["key"]
    return "stored"


@settings(max_examples=scale(60, 600), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=JSONISH | NOT_JSON, task=TEXT, queue=TEXT, key=st.none() | TEXT)
def test_fuzz_enqueue_stores_exactly_or_refuses_cleanly(
    fuzz_queue: jobq.Queue, payload: Any, task: str, queue: str, key: str | None
) -> None:
    if queue == "":
        queue = "q"  # the empty name means "the default queue"
    if key is not None:
        key = f"{uuid.uuid4().hex[:8]}{key}"[:200]  # unique per example: a repeated key returns the earlier job
    roundtrip(fuzz_queue, payload, task=task, queue=queue, key=key)


@pytest.mark.parametrize("text", SQLISH)
def test_sql_looking_text_is_stored_literally(fuzz_queue: jobq.Queue, text: str) -> None:
    before = fuzz_queue.count()
    key = f"{uuid.uuid4().hex[:8]}{text}"
    assert roundtrip(fuzz_queue, {"t": text}, task=text[:200], queue=text[:200], key=key) == "stored"
    assert fuzz_queue.count() == before + 1, "the text ran as SQL"
    if "\\" not in text and '"' not in text:  # search matches the JSON text, where these two are escaped
        assert fuzz_queue.count(jobq.JobFilter(search=text)) == 1


def test_control_characters_and_long_names_are_refused(fuzz_queue: jobq.Queue) -> None:
    for kw in ({"task": "a\nb"}, {"queue": "a\x00b"}, {"key": "k\r"}, {"task": "t" * 201}, {"key": "k" * 201}):
        assert roundtrip(fuzz_queue, {}, **kw) == "refused", kw
    assert fuzz_queue.count() == 0


@pytest.mark.parametrize("kw", [{"payload": "\udcff"}, {"task": "a\ud800"}, {"key": "\udcff"}, {"queue": "q\ud800"}])
def test_invalid_unicode_is_refused_as_invalid_payload(fuzz_queue: jobq.Queue, kw: dict[str, str]) -> None:
    kw = dict(kw)  # the parameter dict is shared by the SQLite and PostgreSQL runs: do not pop from it
    payload = kw.pop("payload", {})
    assert roundtrip(fuzz_queue, payload, **kw) == "refused"


def test_cli_invalid_utf8_argument_is_one_line(tmp_path: Path) -> None:
    raw = [os.fsencode(str(JOBQ)), b"--db", os.fsencode(f"sqlite:///{tmp_path}/q.db"), b"enqueue", b"--json", b'"\xff"']
    done = subprocess.run(raw, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-500:]
    assert done.stderr.startswith("jobq: error: ") and len(done.stderr.strip().splitlines()) == 1


def test_oversized_payload_is_refused_before_copying_it(sqlite_url: str, record: Recorder) -> None:
    big = "x" * (64 * 1024 * 1024)  # 1 GB would take minutes and 3 GB of RAM; the ratio is what matters
    with jobq.Queue(sqlite_url) as q:
        ratios = []
        for payload in (big, {"data": big}):
            tracemalloc.start()
            try:
                with pytest.raises(jobq.PayloadTooLarge):
                    q.enqueue(payload)
                ratios.append(tracemalloc.get_traced_memory()[1] / len(big))
            finally:
                tracemalloc.stop()
        assert q.count() == 0
    print(f"\noversized payload: peak extra memory while refusing = {max(ratios):.2f} x the payload")
    assert max(ratios) < 0.5, "refused without copying the payload"


def db_bytes(q: jobq.Queue) -> int:
    """The database file's size once the WAL is checkpointed into it and truncated."""
    q.backend.wal_checkpoint()  # type: ignore[attr-defined]
    path = q.url.removeprefix("sqlite:///")
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))


def test_enqueue_flood_keeps_storage_bounded(sqlite_url: str, record: Recorder) -> None:
    n = scale(2000, 20000)
    with jobq.Queue(sqlite_url) as q:
        limit = q.settings.payload_limit_bytes
        q.enqueue({"first": True})
        base = db_bytes(q)
        refused = 0
        for i in range(n):  # oversized, unserialisable or badly named: all refused before any write
            try:
                if i % 3 == 0:
                    q.enqueue({"pad": "x" * (limit + 1)})
                elif i % 3 == 1:
                    q.enqueue({"o": object()})
                else:
                    q.enqueue({}, task="\n")
            except jobq.InvalidPayload:
                refused += 1
        after_refused = db_bytes(q)
        for _ in range(n):  # a client retrying the same job: one row
            q.enqueue({"same": True}, key="retry-storm")
        after_retries = db_bytes(q)
        count = q.count()
        jobs = 50
        before = db_bytes(q)
        for _ in range(jobs):  # the most a valid job can cost: about the payload limit
            q.enqueue({"pad": "x" * (limit - 20)})
        per_job = (db_bytes(q) - before) / jobs
    record("enqueue flood (refused, retried with one key)", backend="sqlite", jobs=count, faults=2 * n, lost=0,
           duplicated=count - 2, integrity=None, refused=refused, growth_from_refused=after_refused - base,
           growth_from_retries=after_retries - after_refused, bytes_per_max_size_job=round(per_job))  # fmt: skip
    assert refused == n
    assert after_refused == base, "refused input wrote nothing"
    assert count == 2, "n retries of one key stored one job"
    assert after_retries - after_refused <= 8192, "retries of a known key add (almost) nothing"
    assert per_job < 1.5 * limit, "a job costs about its payload, bounded by payload_limit_bytes"


# -- file paths: arbitrary text, nothing written outside the root -------------------------------------
@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data" / "files").mkdir(parents=True)
    (tmp_path / "data" / "files" / "a.txt").write_text("hello\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret\n")
    (tmp_path / "data" / "files" / "link").symlink_to(tmp_path / "outside" / "secret.txt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@settings(max_examples=scale(150, 1500), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(max_size=400) | st.builds(lambda a, b: f"{a}/../{b}", st.text(max_size=30), st.text(max_size=30)))
def test_fuzz_any_path_text_is_refused_or_stays_inside(site: Path, path: str) -> None:
    before = tree(site)
    try:
        written = stamp_file(lambda: None, path, 1, data_root="data", database_url="sqlite:///data/queue.db")
    except (UnsafePath, FileMissing) as exc:
        assert str(exc) and "\n" not in str(exc)
        written = False
    after = tree(site)
    changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
    assert all(p.startswith(str(site / "data") + os.sep) for p in changed), changed
    if written:
        assert str(resolve_job_path("data", path)).startswith(str((site / "data").resolve()) + os.sep)


def test_wrong_json_types_for_a_file_job_fail_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobq.demo.consumer import make_stamp_handler
    from jobq.demo.files import FILE_TASK
    from jobq.worker import Worker

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "files").mkdir(parents=True)
    s = jobq.Settings(database_url=f"sqlite:///{tmp_path}/q.db", data_dir="data", consumer_delay="0-0")
    bad = [None, 7, "data/files/x.txt", ["data/files/x.txt"], {"path": 5}, {"path": None}, {"path": ["a"]}, {}]
    with jobq.Queue(settings=s) as q:
        ids = [q.enqueue(p, task=FILE_TASK) for p in bad]
        Worker(q, {FILE_TASK: make_stamp_handler(s)}, exit_when_idle=True).run()
        jobs = [q.get(i) for i in ids]
    assert all(j.status == jobq.JobStatus.FAILED and j.attempts == 1 for j in jobs), [
        (j.payload, j.status) for j in jobs
    ]
    assert all(j.last_error and "\n" not in j.last_error.strip() for j in jobs), [j.last_error for j in jobs]
    assert backend_name(s.database_url) == "sqlite"
