"""Rewrite the results table of ``docs/reliability.md`` from the soak results file.

``make soak`` runs ``JOBQ_SOAK=1 pytest tests/reliability``, whose tests append one JSON line each
to ``docs/reliability-results.jsonl`` (``JOBQ_SOAK_RESULTS`` overrides), then runs this script. It
keeps the latest row per (test, backend), rewrites the results file with only those rows, and
replaces the text between the ``results:start`` and ``results:end`` markers of the document.

Usage: ``python tests/reliability/report.py [RESULTS] [DOC]``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS_DEFAULT = Path(os.environ.get("JOBQ_SOAK_RESULTS", str(REPO / "docs" / "reliability-results.jsonl")))
DOC_DEFAULT = REPO / "docs" / "reliability.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
HEADER = (
    "| test | backend | jobs | faults injected | lost | duplicated | redelivered | kill to reclaim p50 / p99 "
    "| integrity_check | other figures |\n"
    "|---|---|---:|---:|---:|---:|---:|---|---|---|"
)


def latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest row of each (name, backend), in the order the names first appeared."""
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        kept[(row["name"], row["backend"])] = row  # later lines are newer
    return list(kept.values())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value)
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 90 else text[:87] + "..."


def render(rows: list[dict[str, Any]]) -> str:
    lines = [HEADER]
    for r in rows:
        p50, p99 = r.get("reclaim_p50"), r.get("reclaim_p99")
        reclaim = f"{p50:.2f} s / {p99:.2f} s" if p50 is not None and p99 is not None else "-"
        extra = "; ".join(f"{k}: {_cell(v)}" for k, v in (r.get("extra") or {}).items())
        lines.append(
            f"| {_cell(r['name'])} | {r['backend']} | {r['jobs']} | {r['faults']} | {r['lost']} | {r['duplicated']} "
            f"| {_cell(r.get('redelivered'))} | {reclaim} | {_cell(r.get('integrity'))} | {extra or '-'} |"
        )
    when = max((r.get("at", "") for r in rows), default="")
    modes = sorted({r.get("mode", "?") for r in rows})
    return "\n".join(lines) + f"\n\nLatest run: {when} UTC ({', '.join(modes)} mode).\n"


def rewrite(results: Path, doc: Path) -> int:
    """Rewrite ``doc``'s table from ``results``; return the number of rows."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    rows = latest(rows)
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{render(rows)}{END}{tail}")
    return len(rows)


def main(argv: list[str]) -> int:
    results = Path(argv[1]) if len(argv) > 1 else RESULTS_DEFAULT
    doc = Path(argv[2]) if len(argv) > 2 else DOC_DEFAULT
    n = rewrite(results, doc)
    print(f"{doc}: {n} result rows from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
