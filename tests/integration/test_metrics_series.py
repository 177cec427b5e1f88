"""The series the exporter serves, over the Prometheus text format it really serves (issue 17).

- A queue once served keeps its series. The counters are folded in by the exporter's follower
  about once a second, while the gauges are read at each scrape: a queue whose last job ran
  between two folds showed in no family at all at the scrape in between (its counters served,
  gone, then back), which Prometheus reads as a series that ended and a counter reset.
- ``jobq_metrics_scrape_seconds`` is the time the scrape took. A variable of the attempts'
  count took the name of the scrape's start, and the gauge read the host's uptime."""

from __future__ import annotations

import math
import time

import pytest
from scraped import served

import jobq
from jobq.observability.metrics import JobqCollector

prometheus = pytest.importorskip("prometheus_client")


def test_a_queue_whose_jobs_ran_between_folds_keeps_its_series(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        q.enqueue("x", queue="mail")
        registry = prometheus.CollectorRegistry()
        # No fold at the scrape: as the exporter serves, whose follower folds between scrapes.
        # Every backlog read counts as cheap: a read slowed by a loaded machine (over
        # METRICS_BACKLOG_READ_FREE_SECONDS) would serve the first scrape's pending count again.
        collector = JobqCollector(q, settle_seconds=0.0, scrape_events=0, backlog_free_seconds=math.inf)
        registry.register(collector)
        first = served(registry)
        assert first[("jobq_jobs_pending", (("due", "true"), ("queue", "mail")))] == 1
        assert first[("jobq_completed_total", (("queue", "mail"),))] == 0

        job = q.claim("w", queue="mail")
        assert job is not None
        q.complete(job)
        between = served(registry)  # nothing of the queue pending or running, nothing folded yet
        assert between[("jobq_completed_total", (("queue", "mail"),))] == 0
        assert between[("jobq_jobs_pending", (("due", "true"), ("queue", "mail")))] == 0

        collector._take_events(q.clock(), 10_000)  # the follower's round
        after = served(registry)
        assert after[("jobq_completed_total", (("queue", "mail"),))] == 1
        assert after[("jobq_job_run_seconds_count", (("queue", "mail"),))] == 1


def test_the_scrape_seconds_gauge_is_what_the_scrape_took(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        q.enqueue("x")  # a queue to serve: the attempts are worked out for each queue served
        registry = prometheus.CollectorRegistry()
        registry.register(JobqCollector(q, settle_seconds=0.0))
        for _ in range(2):
            began = time.perf_counter()
            figures = served(registry)
            took = time.perf_counter() - began
            assert 0 < figures[("jobq_metrics_scrape_seconds", ())] <= took
