"""SQLite backend guards that need no running system: version check, URL parsing, pruner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

import jobq
from jobq.backends import open_backend
from jobq.backends.sqlite import parse_sqlite_url
from jobq.worker import rescuer
from jobq.worker.rescuer import Pruner


def test_too_old_sqlite_is_refused_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(apsw, "sqlite_lib_version", lambda: "3.40.1")
    with pytest.raises(jobq.StorageError, match=r"SQLite 3\.40\.1 is too old: jobq needs >= 3\.51\.3"):
        open_backend(f"sqlite:///{tmp_path}/q.db")
    assert not (tmp_path / "q.db").exists()


def test_bundled_sqlite_is_new_enough() -> None:
    version = tuple(int(p) for p in apsw.sqlite_lib_version().split(".")[:3])
    assert version >= (3, 51, 3)


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("sqlite:///data/queue.db", "data/queue.db", {}),
        ("sqlite:////abs/queue.db", "/abs/queue.db", {}),
        ("sqlite:///q.db?synchronous=NORMAL", "q.db", {"synchronous": "NORMAL"}),
        ("data/queue.db", "data/queue.db", {}),
    ],
)
def test_parse_sqlite_url(url: str, path: str, options: dict[str, str]) -> None:
    assert parse_sqlite_url(url) == (path, options)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/q.db", "bad SQLite URL"),
        ("sqlite:///q.db?colour=blue", "unknown SQLite URL option"),
        ("sqlite:///q.db?synchronous=SOMETIMES", "synchronous must be"),
        ("mysql://x/y", "unsupported database URL"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(jobq.ConfigError, match=message):
        open_backend(url)


def test_pruner_deletes_only_old_finished_jobs(tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db", clock=lambda: now[0]) as q:
        done = q.enqueue("done")
        job = q.claim("w")
        assert job is not None
        q.complete(job)
        waiting = q.enqueue("waiting")
        now[0] += 8 * 86400
        Pruner(q, prune_after=7 * 86400).tick()
        assert q.count() == 1 and q.get(waiting).status == jobq.JobStatus.PENDING
        with pytest.raises(jobq.JobNotFound):
            q.get(done)


def test_the_pruner_purges_in_calls_of_a_bounded_size_and_ends_its_tick_when_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick purges ``PRUNE_CALL_JOBS`` jobs a call until none is left, and checks between calls
    whether its worker is stopping (a first prune of a long history takes minutes)."""
    monkeypatch.setattr(rescuer, "PRUNE_CALL_JOBS", 3)
    now = [1_900_000_000.0]
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db", clock=lambda: now[0]) as q:
        ids = q.enqueue_many([{"n": n} for n in range(14)])
        assert all(r.ok for r in q.cancel_many(ids=ids, actor="ops"))
        now[0] += 8 * 86400
        calls: list[int | None] = []
        purge = q.purge

        def counted(**kw: Any) -> int:
            calls.append(kw.get("limit"))
            return purge(**kw)

        monkeypatch.setattr(q, "purge", counted)
        pruner = Pruner(q, prune_after=7 * 86400)
        pruner.tick()
        assert q.count() == 0 and calls == [3, 3, 3, 3, 3]  # 3+3+3+3+2
        q.enqueue_many([{"n": n} for n in range(7)])
        assert all(r.ok for r in q.cancel_many(where=jobq.JobFilter(statuses=(jobq.JobStatus.PENDING,)), actor="ops"))
        now[0] += 8 * 86400
        pruner.stop()
        calls.clear()
        pruner.tick()  # asked to stop: one call, then the tick ends
        assert calls == [3] and q.count() == 4
