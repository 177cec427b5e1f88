"""What the metrics exporter serves, read back as a scraper reads it: through the Prometheus text
format ``prometheus_client`` serves and its own parser (issue 17)."""

from __future__ import annotations

from typing import Any

#: One scrape: {(sample name, sorted labels): value}.
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def served(registry: Any) -> Scrape:
    """One scrape of ``registry`` (a ``prometheus_client.CollectorRegistry``), as the text format
    carries it."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(scrape: Scrape, name: str) -> float:
    """The sum of sample ``name`` over all its labels (every queue)."""
    return sum(value for (sample, _labels), value in scrape.items() if sample == name)
