"""SQLite backend guards that need no running system: version check, URL parsing, pruner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

import jobq
from jobq.backends import open_backend
from jobq.backends import sqlite as sqlite_backend
from jobq.backends.sqlite import parse_sqlite_url
from jobq.backends.statements import LOWER_FUNCTION
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


_SEARCHED_ROWS = [
    "data/Données/Été.txt",
    "ÉTÉ 2026",
    "İstanbul",  # lower(): "i̇stanbul", an ASCII i and a combining dot
    "\u212a-9 Kelvin é",  # the Kelvin sign lowers to an ASCII k
    "back\\slash 100% été_x",
    "plain ascii",
    "Ünïcödé ÆØÅ ß",
]


@pytest.mark.parametrize(
    "text",
    ["été", "ÉTÉ", "données/été.txt", "i̇stanbul", "İSTANBUL", "k-9 kelvin é", "\u212a-9", "100% été", "h% été_",
     "\\slash 100% é", "ünïcödé æøå", "ß", "é_x", "éx", "nope é"],
)  # fmt: skip
def test_a_search_with_other_letters_matches_as_python_lowers_both_sides(text: str) -> None:
    """SQLite's search for text with non-ASCII letters (``Dialect.like``): a LIKE in C that lets
    every possible match through, then ``jobq_lower`` on both sides. Whatever the prefilter
    drops must not match: the result is exactly Python's ``text.lower() in row.lower()``. (A
    search of ASCII only is SQLite's LIKE alone: "k-9" does not find the Kelvin sign's "\u212a-9".)"""
    conn = apsw.Connection(":memory:")
    conn.create_scalar_function(LOWER_FUNCTION, sqlite_backend._lower, 1, deterministic=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
    conn.executemany("INSERT INTO t (payload) VALUES (?)", [(r,) for r in _SEARCHED_ROWS])
    params: dict[str, object] = {}
    clause = sqlite_backend.DIALECT.contains("payload", "s", text, params)
    got = [r[0] for r in conn.execute(f"SELECT payload FROM t WHERE {clause} ORDER BY id", params)]
    assert got == [r for r in _SEARCHED_ROWS if text.lower() in r.lower()], clause


def test_a_statement_s_parameter_getter_is_made_once() -> None:
    """A batch binds its rows through ``_parameter_getter``, which parses the statement's
    parameters: once per statement text, not per batch (the cache was once lost to a function
    inserted between it and its decorator, and applied to that function instead)."""
    sql = "INSERT INTO t (a, b) VALUES (:b, :a)"
    getter = sqlite_backend._parameter_getter(sql)
    assert sqlite_backend._parameter_getter(sql) is getter
    assert getter({"a": 1, "b": 2}) == (2, 1)
    assert not hasattr(sqlite_backend._lower, "cache_info")  # payload texts are not kept


@pytest.mark.parametrize("text", ["4", "a", "é", "İ"])
def test_a_search_over_payloads_written_by_hand_as_other_types_never_fails(tmp_path: Path, text: str) -> None:
    """`sqlite3` can store any type in any column: a payload set by hand to a number, a blob or a
    float (NULL is refused by the column). A search (ASCII, or with other letters through
    ``jobq_lower``) reads past them: a number matches by its digits as SQLite writes it, a blob
    never matches, and the other jobs are found as usual."""
    url = f"sqlite:///{tmp_path}/q.db"
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"name": "Aé İ 4"}, {"n": 1}, {"n": 2}, {"n": 3}])
        conn = apsw.Connection(str(tmp_path / "q.db"))
        try:
            conn.execute(f"UPDATE jobs SET payload = 42 WHERE id = {ids[1]}")
            conn.execute(f"UPDATE jobs SET payload = X'41c3a9' WHERE id = {ids[2]}")  # bytes of 'Aé'
            conn.execute(f"UPDATE jobs SET payload = 0.5 WHERE id = {ids[3]}")
        finally:
            conn.close()
        found = [j.id for j in q.list(jobq.JobFilter(search=text), jobq.Page(descending=False))]
        assert found == [ids[0], ids[1]] if text == "4" else [ids[0]]
        assert q.count(jobq.JobFilter(search=text)) == len(found)
