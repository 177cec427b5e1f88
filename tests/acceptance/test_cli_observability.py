"""Observability through the real ``jobq`` command: Prometheus metrics scraped over HTTP and
parsed with prometheus_client's own parser, JSON log lines of a real worker, and progress in
``jobq show``."""

from __future__ import annotations

import json
import socket
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for
from test_cli import Cli, enqueue

parser = pytest.importorskip("prometheus_client.parser")

TASKS = textwrap.dedent(
    """
    import logging
    import pathlib

    log = logging.getLogger("mytasks")

    def work(ctx):
        log.info("working on %s", ctx.payload)
        if ctx.payload.get("fail"):
            raise ValueError("no good")
        ctx.progress(0.5, "half way", force=True)
        gate = ctx.payload.get("gate")
        while gate and not pathlib.Path(gate).exists():
            ctx.sleep(0.05)
        return "done"
    """
)


@pytest.fixture(name="cli")
def cli_runner(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, Any]:
    """The metric families served on ``port``, by name, parsed by prometheus_client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    family = families[name]
    wanted = sample or name
    found = [
        s.value for s in family.samples if s.name == wanted and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, family.samples)
    return float(found[0])


def test_metrics_are_served_on_loopback_and_parse(cli: Cli) -> None:
    (cli.root / "mytasks.py").write_text(TASKS)
    enqueue(cli, {"n": 0})  # the database exists before the exporter starts (it only reads)
    port = free_port()
    cli.env["JOBQ_LOG_LEVEL"] = "INFO"
    exporter = cli.start("metrics", "--port", str(port), log="metrics.log")
    cli.env["JOBQ_LOG_LEVEL"] = "WARNING"
    families = wait_for(lambda: _try_scrape(port), 30, "the exporter to answer")
    assert value(families, "jobq_jobs_pending", queue="default", due="true") == 1
    assert value(families, "jobq_jobs_pending", queue="default", due="false") == 0
    assert value(families, "jobq_oldest_due_age_seconds", queue="default") >= 0
    assert value(families, "jobq_completed", "jobq_completed_total", queue="default") == 0

    for i in range(3):
        enqueue(cli, {"n": i + 1})
    enqueue(cli, {"fail": True}, "--max-attempts", "1")
    enqueue(cli, {"later": True}, "--delay", "1h", "--queue", "mail")
    done = cli.run("worker", "-H", "mytasks:work", "--exit-when-idle")
    assert done.returncode == 0, done.stderr

    def counted() -> dict[str, Any] | None:
        # The backlog too: a read of it that took over 5 ms (a loaded machine) is served again
        # for up to 200 times as long (METRICS_BACKLOG_READ_SHARE) before the next.
        f = scrape(port)
        done = value(f, "jobq_completed", "jobq_completed_total", queue="default") == 4
        return f if done and value(f, "jobq_jobs_pending", queue="default", due="true") == 0 else None

    families = wait_for(counted, 30, "the exporter to count the completions")
    assert value(families, "jobq_failures", "jobq_failures_total", queue="default") == 1
    assert value(families, "jobq_attempts", "jobq_attempts_total", queue="default") == 5
    assert value(families, "jobq_enqueued", "jobq_enqueued_total", queue="default") == 4
    assert value(families, "jobq_jobs_pending", queue="default", due="true") == 0
    assert value(families, "jobq_jobs_pending", queue="mail", due="false") == 1
    assert value(families, "jobq_job_run_seconds", "jobq_job_run_seconds_count", queue="default") == 5
    assert value(families, "jobq_job_wait_seconds", "jobq_job_wait_seconds_bucket", queue="default", le="+Inf") == 5
    assert value(families, "jobq_job_attempts", "jobq_job_attempts_sum", queue="default") == 5
    assert families["jobq_lease_lost"].type == "counter" and families["jobq_job_run_seconds"].type == "histogram"
    assert "jobq_workers" in families and "jobq_rescues" in families and "jobq_retries" in families
    log = (cli.root / "metrics.log").read_text()
    assert f"http://127.0.0.1:{port}/metrics" in log
    assert cli.stop(exporter) == 0


def _try_scrape(port: int) -> dict[str, Any] | None:
    try:
        return scrape(port)
    except OSError:
        return None


def test_a_busy_metrics_port_is_one_line_error(cli: Cli) -> None:
    enqueue(cli, {"n": 0})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        line = cli.fails("metrics", "--port", str(taken.getsockname()[1]))
    assert "cannot serve metrics on 127.0.0.1" in line


def test_worker_serves_metrics_and_json_logs_with_the_runs_fields(cli: Cli) -> None:
    (cli.root / "mytasks.py").write_text(TASKS)
    gate = cli.root / "gate"
    running = enqueue(cli, {"gate": str(gate)}, "--task", "slow")
    failing = enqueue(cli, {"fail": True}, "--max-attempts", "1", "--task", "bad")
    port = free_port()
    cli.env.update(JOBQ_LOG_FORMAT="json", JOBQ_LOG_LEVEL="INFO")
    worker = cli.start("worker", "-H", "mytasks:work", "-c", "2", "--metrics-port", str(port), "--grace", "10s")
    wait_for(lambda: cli.status(failing) == "FAILED", 30, "the failing job to fail")
    families = wait_for(lambda: _try_scrape(port), 30, "the worker's exporter")
    assert value(families, "jobq_jobs_processing", queue="default") == 1
    assert value(families, "jobq_workers", queue="default", state="alive") == 1

    # Progress: stored by the handler, shown by `jobq show` while the job runs.
    wait_for(lambda: "half way" in cli.ok("show", str(running)), 30, "the progress to be shown")
    assert "50% - half way" in cli.ok("show", str(running))
    shown = cli.json("show", str(running))
    assert shown["progress"]["fraction"] == 0.5 and shown["progress"]["message"] == "half way"

    gate.write_text("")
    wait_for(lambda: cli.status(running) == "COMPLETED", 30, "the gated job to complete")
    assert cli.stop(worker) == 0
    lines = (cli.root / "proc.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["message"].startswith("worker ") and "started" in r["message"] for r in records)
    (failed,) = [r for r in records if r["message"].startswith(f"job {failing} failed")]
    assert failed["level"] == "WARNING"
    assert (failed["job_id"], failed["queue"], failed["task"], failed["attempt"]) == (failing, "default", "bad", 1)
    # The handler's own logger, in the runner thread, carries the run's fields too.
    (mine,) = [r for r in records if r["logger"] == "mytasks" and r.get("job_id") == running]
    assert (mine["task"], mine["attempt"], mine["worker"]) == ("slow", 1, failed["worker"])
    assert any(r["logger"] == "jobq.metrics" for r in records)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability"


def test_dashboard_and_alert_rules_use_only_metrics_the_exporter_serves(tmp_path: Path) -> None:
    import re
    import shutil
    import subprocess

    from prometheus_client import CollectorRegistry, generate_latest

    import jobq
    from jobq.observability.metrics import JobqCollector

    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobqCollector(q))
        generate_latest(registry)  # the counters start here
        q.enqueue("x")
        q.complete(q.claim("w") or pytest.fail("nothing to claim"))  # a sample in every histogram
        served = set()
        for family in parser.text_string_to_metric_families(generate_latest(registry).decode()):
            served.add(family.name)
            served.update(s.name for s in family.samples)
    dashboard = json.loads((DOCS / "grafana-jobq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (DOCS / "prometheus-alerts.yml").read_text()
    used = set(re.findall(r"\bjobq_[a-z_]+", " ".join(exprs) + rules))
    assert used and used <= served, used - served
    promtool = shutil.which("promtool")
    if promtool:  # Debian's `prometheus` package; the rules must load as Prometheus reads them
        done = subprocess.run(
            [promtool, "check", "rules", str(DOCS / "prometheus-alerts.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_python_examples_of_the_docs_run_as_written(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    pytest.importorskip("opentelemetry.sdk")
    text = (DOCS.parent / "observability.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"example {i}:\n{block}\n{done.stderr}"
        if "progress_of" in block:
            assert "fraction=1.0" in done.stdout and "4 of 4 rows" in done.stdout
        if "ConsoleSpanExporter" in block:
            assert '"name": "jobq run double"' in done.stdout and '"name": "jobq enqueue default"' in done.stdout
