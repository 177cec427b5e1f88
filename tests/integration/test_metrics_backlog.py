"""The exporter's backlog gauges, when their read is costly (issue 17).

Counting the PENDING jobs walks the whole backlog: 17 ms for 100,000 jobs on SQLite, at every
scrape. Such a read is made again only once its share of the time since is small
(``METRICS_BACKLOG_READ_SHARE``); the running jobs are read at every scrape all the same, and
``jobq_backlog_gauges_age_seconds`` says how old the PENDING figures served are. Here the cost
rule is set so that every read counts as costly, or every read as cheap."""

from __future__ import annotations

from typing import Any

import pytest
from pg import PgServer, fresh_database
from polling import wait_for

import jobq
from jobq.observability import metrics
from jobq.observability.metrics import JobqCollector


def scrape(collector: JobqCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    """{(sample name, label values): value} of one scrape."""
    out = {}
    for family in collector.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sample.labels.values()))] = sample.value
    return out


def due(figures: dict[Any, float], queue: str = "default") -> float:
    return figures[("jobq_jobs_pending", (queue, "true"))]


def test_a_costly_backlog_is_served_from_its_last_read_and_running_jobs_stay_current(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        q.enqueue_many(["a", "b", "c"])
        collector = JobqCollector(q, settle_seconds=0.0, backlog_share=1e-9, backlog_free_seconds=0.0)
        first = scrape(collector)
        assert due(first) == 3 and first[("jobq_backlog_gauges_age_seconds", ())] == 0
        q.enqueue_many(["d", "e"])
        job = q.claim("w")
        assert job is not None
        second = scrape(collector)
        assert due(second) == 3  # the backlog of the first read (now 4 due)
        assert second[("jobq_backlog_gauges_age_seconds", ())] > 0
        assert second[("jobq_jobs_processing", ("default",))] == 1  # read at this scrape
        assert second[("jobq_attempts_total", ("default",))] == 1
        q.complete(job)
        third = scrape(collector)
        assert third[("jobq_jobs_processing", ("default",))] == 0
        assert third[("jobq_completed_total", ("default",))] == 1
        assert third[("jobq_attempts_total", ("default",))] == 1


def test_a_costly_backlog_is_read_again_once_its_share_of_the_time_allows(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        q.enqueue("a")
        # share 1: the read is made again once as long has passed as it took.
        collector = JobqCollector(q, backlog_share=1.0, backlog_free_seconds=0.0)
        assert due(scrape(collector)) == 1
        q.enqueue("b")
        wait_for(lambda: due(scrape(collector)) == 2, timeout=10, what="the backlog read again")


def test_the_backlog_is_read_again_past_the_staleness_bound(backend_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "METRICS_BACKLOG_STALE_MAX_SECONDS", 0.0)
    with jobq.Queue(backend_url) as q:
        collector = JobqCollector(q, backlog_share=1e-9, backlog_free_seconds=0.0)
        assert ("jobq_jobs_pending", ("default", "true")) not in scrape(collector)
        q.enqueue("a")
        figures = scrape(collector)
        assert due(figures) == 1 and figures[("jobq_backlog_gauges_age_seconds", ())] == 0


def test_a_cheap_backlog_is_read_at_every_scrape(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        collector = JobqCollector(q, backlog_free_seconds=60.0)  # every read counts as cheap
        q.enqueue("a")
        assert due(scrape(collector)) == 1
        q.enqueue("b")
        figures = scrape(collector)
        assert due(figures) == 2 and figures[("jobq_backlog_gauges_age_seconds", ())] == 0


def test_a_share_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="backlog_share"):
        JobqCollector(None, settle_seconds=0.0, backlog_share=0.0)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_a_scrape_between_backlog_reads_still_fails_when_the_database_is_gone(postgres_server: PgServer) -> None:
    # The running jobs are read at every scrape: a database that went away between two backlog
    # reads fails the scrape, as before, instead of serving the kept figures as if all were well.
    if not postgres_server.managed:
        pytest.skip("stopping needs the session's own PostgreSQL (JOBQ_TEST_POSTGRES_URL is external)")
    # The failing scrape waits 2 s for a connection (15 s by default: half this test's time).
    with fresh_database(postgres_server) as url, jobq.Queue(f"{url}?pool_timeout=2") as q:
        q.enqueue("a")
        collector = JobqCollector(q, settle_seconds=0.0, backlog_share=1e-9, backlog_free_seconds=0.0)
        assert due(scrape(collector)) == 1
        postgres_server.stop()
        try:
            with pytest.raises(jobq.StorageError):
                scrape(collector)
        finally:
            postgres_server.start()
        assert due(wait_for(lambda: scrape_or_none(collector), timeout=60, what="a scrape after the restart")) == 1


def scrape_or_none(collector: JobqCollector) -> dict[tuple[str, tuple[str, ...]], float] | None:
    """A scrape, or None while the database cannot be read yet (a server starting again)."""
    try:
        return scrape(collector)
    except jobq.StorageError:
        return None
