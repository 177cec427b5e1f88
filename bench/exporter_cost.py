"""``python -m bench.exporter_cost``: what ``jobq metrics`` costs per job, in its own CPU.

The observed bench row adds the exporter's CPU to the workers' and compares totals that vary by
10-20 % round to round on a shared machine; the exporter's own CPU per job varies far less. Each
run: a fresh SQLite file with ``--jobs`` jobs, a real ``jobq metrics`` process scraped every
second, one ``Worker`` (batch 100, this process) draining the queue, then a wait until the
exporter has counted every completion (read from the regular scrapes). Prints the worker's and
the exporter's CPU microseconds per job (``/proc/PID/stat``: 10 ms ticks, so use tens of
thousands of jobs).

To compare two trees, alternate runs with ``PYTHONPATH=<other tree>/src`` (the exporter process
inherits it).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from bench.core import cpu_seconds

SCRAPE_SECONDS = 1.0
SETTLE_SECONDS = 30.0


def run_once(jobs: int) -> tuple[float, float]:
    """(worker, exporter) CPU microseconds per job of one drain."""
    from jobq import Queue
    from jobq.worker import Worker

    workdir = tempfile.mkdtemp(prefix="jobq-exporter-cost-")
    url = f"sqlite:///{workdir}/q.db"
    q = Queue(url)
    q.enqueue_many([{"i": i} for i in range(jobs)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = "import sys; from jobq.cli import main; sys.exit(main())"
    exporter = subprocess.Popen(
        [sys.executable, "-c", command, "metrics", "--db", url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                return str(r.read().decode())
        except OSError:
            return None

    stop = threading.Event()
    try:
        while fetch() is None:
            if exporter.poll() is not None:
                raise RuntimeError("jobq metrics exited")
            time.sleep(0.05)

        latest = [""]  # the text of the last regular scrape

        def scrape() -> None:
            while not stop.wait(SCRAPE_SECONDS):
                latest[0] = fetch() or latest[0]

        scraper = threading.Thread(target=scrape)
        scraper.start()
        exporter0, worker0 = cpu_seconds(exporter.pid), time.process_time()
        Worker(q, lambda ctx: None, concurrency=1, batch=100, name="bench", exit_when_idle=True).run()
        worker = time.process_time() - worker0
        done = f'jobq_completed_total{{queue="default"}} {float(jobs)}'
        deadline = time.monotonic() + SETTLE_SECONDS
        # Read from the regular scrapes: a fetch of its own four times a second made the exporter
        # serve up to five times the stated load while the run settled (as bench.adapters'
        # Observer.settle found), and its CPU counted as the exporter's cost per job.
        while done not in latest[0] and time.monotonic() < deadline:
            time.sleep(0.25)
        exported = cpu_seconds(exporter.pid) - exporter0
        stop.set()
        scraper.join()
    finally:
        stop.set()
        exporter.terminate()
        exporter.wait(timeout=30)
        q.close()
        shutil.rmtree(workdir, ignore_errors=True)  # each run left its database behind
    return worker / jobs * 1e6, exported / jobs * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exporter_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    ratios = []
    for r in range(args.rounds):
        worker, exported = run_once(args.jobs)
        ratios.append(exported / worker)
        print(f"round {r + 1}: worker {worker:.1f} us/job, exporter {exported:.2f} us/job ({exported / worker:.1%})")
    print(f"median exporter / worker CPU: {statistics.median(ratios):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
