"""report.py keeps the newest row per test and backend and rewrites only the marked table."""

from __future__ import annotations

import json
from pathlib import Path

from report import END, START, rewrite


def test_report_rewrites_the_marked_table_with_the_latest_rows(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    row = {"name": "crash point: after_claim", "backend": "sqlite", "mode": "soak", "jobs": 10, "faults": 10,
           "lost": 0, "duplicated": 0, "redelivered": 10, "reclaim_p50": 1.5, "reclaim_p99": 2.25,
           "integrity": "ok", "extra": {"torn_lines": 0}, "at": "2026-01-01 00:00:00"}  # fmt: skip
    newer = {**row, "jobs": 40, "at": "2026-01-02 00:00:00"}
    results.write_text("\n".join(json.dumps(r) for r in (row, {**row, "backend": "postgres"}, newer)) + "\n")
    assert rewrite(results, doc) == 2
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old table" not in text
    assert "| crash point: after_claim | sqlite | 40 | 10 | 0 | 0 | 10 | 1.50 s / 2.25 s | ok | torn_lines: 0 |" in text
    assert len(results.read_text().splitlines()) == 2, "the results file keeps only the latest rows"
