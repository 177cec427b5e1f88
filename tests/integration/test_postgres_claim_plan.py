"""The PostgreSQL claim's check of the flow controls runs once per statement, never once per
pending row (issue 13): a claim of several queues reads every pending row of them for its sort,
and a correlated look-up of queue_controls per row made each such claim pay for the backlog
again. Read from the plan the server actually ran (EXPLAIN ANALYZE, rolled back)."""

from __future__ import annotations

import re

import pytest
from pg import raw_connect

import jobq
from jobq.backends.ops.claim import _RATE_SLACK

pytestmark = pytest.mark.postgres


def _plan(url: str, queues: list[str], name: str) -> str:
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(200)])
        q.enqueue_many([{"n": i} for i in range(200)], queue="other")
        q.set_limits("other", concurrency=5)  # a row of queue_controls to read
        d = q.backend.dialect  # type: ignore[attr-defined]
        params: dict[str, object] = {"worker": "w", "nonce": "n", "now": 4e9, "expires": 4e9 + 30, "limit": 1}
        fragment = d.sql["uncontrolled_one" if len(queues) == 1 else "uncontrolled_each"]
        freed = "0"
        if name == "complete_set_and_claim":  # as ops.claim renders them
            fragment = f"{d.sql['claim_after_locks']} AND {fragment}"
            freed = d.sql["completions_freed"]
            params["items"] = "[]"
        queues_sql = d.any_of("queue", "q", queues, params)
        statement = d.stmt(name, queues=queues_sql, uncontrolled=fragment, freed=freed, rate_slack=_RATE_SLACK)
        with raw_connect(url) as conn:
            rows = conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, params).fetchall()
            conn.rollback()
        return "\n".join(str(r[0]) for r in rows)


@pytest.mark.parametrize("name", ["claim_flagged", "complete_set_and_claim"])
@pytest.mark.parametrize("queues", [["default"], ["default", "other"]])
def test_the_claims_check_of_the_controls_runs_once(postgres_url: str, queues: list[str], name: str) -> None:
    plan = _plan(postgres_url, queues, name)
    lines = plan.splitlines()
    scans = [i for i, line in enumerate(lines) if "on queue_controls" in line]
    assert scans, plan
    for i in scans:
        loops = re.search(r"loops=(\d+)", lines[i])
        assert loops is not None and int(loops.group(1)) == 1, plan
