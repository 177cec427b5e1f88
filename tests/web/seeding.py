"""Seeding databases for the web-app tests: jobs in every status, and a realistic demo history."""

from __future__ import annotations

import dataclasses
import html.parser
import threading
import time
import traceback
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from jobq import JobFilter, JobStatus, Queue, WorkerInfo
from jobq.web import ops

REPO = Path(__file__).resolve().parents[2]
MANAGER = REPO / "src" / "manager" / "manager.py"
OPS = REPO / "src" / "ops" / "ops.py"


#: ops' tabs of tables, in their order.
OPS_VIEWS = tuple(ops.VIEWS)


def run_ops(view: str = "Queues", timeout: float = 60) -> AppTest:
    """The ops page with one tab of tables open, as a link with ``?view=...`` opens it (only the
    open tab is drawn)."""
    at = AppTest.from_file(str(OPS), default_timeout=timeout)
    at.query_params[ops.VIEW_KEY] = view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ops_frames(timeout: float = 60) -> list[pd.DataFrame]:
    """Every table ops shows, tab by tab: its data grids and its HTML tables (``html_tables``)."""
    frames: list[pd.DataFrame] = []
    for view in OPS_VIEWS:
        at = run_ops(view, timeout)
        frames += [d.value for d in at.dataframe] + html_tables(at)
    return frames


class _TableParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(at: AppTest) -> list[pd.DataFrame]:
    """The page's HTML tables (``jobq.web.views.html_table``) as frames of the text shown, numbers
    read back as numbers."""
    frames = []
    for element in at.get("html"):
        parser = _TableParser()
        parser.feed(element.proto.body)
        for head, *rows in parser.tables:
            frame = pd.DataFrame(rows, columns=head)
            for column in frame:
                as_numbers = pd.to_numeric(frame[column].str.replace(",", ""), errors="coerce")
                if as_numbers.notna().all():
                    frame[column] = as_numbers
            frames.append(frame)
    return frames


class _MetricParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, dict[str, str]] = {}
        self._card: dict[str, str] | None = None
        self._part: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("class") == "jobq-metric":
            self._card = self.cards.setdefault(found.get("data-label") or "", {})
        elif self._card is not None and found.get("class") in ("value", "note"):
            self._part = found["class"]
            self._card[self._part] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._part = None

    def handle_data(self, data: str) -> None:
        if self._card is not None and self._part is not None:
            self._card[self._part] += data


def metric_cards(at: AppTest) -> dict[str, dict[str, str]]:
    """The page's metric cards (``jobq.web.views.metric_cards``): label -> {"value": ..., "note": ...}."""
    parser = _MetricParser()
    for element in at.get("html"):
        parser.feed(element.proto.body)
    return parser.cards


def metrics(at: AppTest) -> dict[str, str]:
    """The metric cards' values by label (empty: none drawn)."""
    return {label: card["value"] for label, card in metric_cards(at).items()}


@dataclasses.dataclass
class Seeded:
    url: str
    ids: dict[JobStatus, list[int]]

    def status(self, job_id: int) -> JobStatus:
        with Queue(self.url) as q:
            return q.get(job_id).status


def _error_text() -> str:
    try:
        raise ValueError("stamp refused: disk quota exceeded")
    except ValueError:
        return traceback.format_exc()


def seed(url: str, pending: int = 2) -> dict[JobStatus, list[int]]:
    """One job COMPLETED, FAILED (with a traceback), PROCESSING and CANCELLED each, ``pending`` PENDING.

    Also registers workers: consumer1 twice (a supervisord restart) and consumer2.
    """
    ids: dict[JobStatus, list[int]] = {s: [] for s in JobStatus}
    now = time.time()
    with Queue(url) as q:
        q.enqueue({"path": "data/files/done.txt"}, task="stamp")
        job = q.claim("seed-worker")
        assert job is not None
        q.complete(job)
        ids[JobStatus.COMPLETED].append(job.id)

        q.enqueue({"path": "data/files/broken.txt"}, task="stamp", max_attempts=1)
        job = q.claim("seed-worker")
        assert job is not None
        q.fail(job, _error_text(), retry=False)
        ids[JobStatus.FAILED].append(job.id)

        q.enqueue({"path": "data/files/running.txt"}, task="stamp")
        job = q.claim("seed-worker", lease=600)
        assert job is not None
        ids[JobStatus.PROCESSING].append(job.id)

        cancelled = q.enqueue({"path": "data/files/dropped.txt"}, task="stamp")
        q.cancel(cancelled, actor="seed")
        ids[JobStatus.CANCELLED].append(cancelled)

        ids[JobStatus.PENDING] = q.enqueue_many(
            [{"path": f"data/files/waiting-{i}.txt"} for i in range(pending)], task="stamp"
        )
        for wid, name, pid, started, seen in (
            ("consumer1-old", "consumer1", 1001, now - 600, now - 300),
            ("consumer1-new", "consumer1", 1002, now - 120, now - 2),
            ("consumer2-a", "consumer2", 1003, now - 600, now - 1),
        ):
            q.register_worker(
                WorkerInfo(id=wid, name=name, host="testhost", pid=pid, queues=("default",),
                           started_at=started, last_seen_at=seen, jobs_done=3)
            )  # fmt: skip
    return ids


class KeepAlive:
    """Heartbeat the seeded workers' rows from a thread (``stop()`` ends it), so that the apps show
    them alive as real consumers would be, however long the page takes to start."""

    def __init__(self, url: str, worker_ids: list[str], every: float = 2.0) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, worker_ids, every), daemon=True)
        self._thread.start()

    def _run(self, url: str, worker_ids: list[str], every: float) -> None:
        with Queue(url) as q:
            while True:
                for wid in worker_ids:
                    q.worker_seen(wid, [], 3, 0)
                if self._stop.wait(every):
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Clock:
    """A clock the demo seeding moves by hand, so history lands in the past minutes."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def seed_demo(url: str, minutes: int = 45) -> dict[JobStatus, list[int]]:
    """A lively database for the browser test and the screenshots: ``minutes`` of history ending
    now (a few jobs a minute, 7-15 s runs, some failures), then jobs in every status and workers."""
    import random

    rng = random.Random(7)
    end = time.time()
    clock = _Clock(end - minutes * 60)
    words = ["invoice", "report", "photo", "backup", "ledger", "memo", "scan", "draft", "log", "notes"]
    ids: dict[JobStatus, list[int]] = {s: [] for s in JobStatus}
    with Queue(url, clock=clock) as q:
        for minute in range(minutes):
            base = end - (minutes - minute) * 60
            for _ in range(rng.randint(2, 7) + (minute // 8)):
                clock.now = base + rng.uniform(0, 40)
                name = f"{rng.choice(words)}-{rng.randrange(16**6):06x}"
                q.enqueue({"path": f"data/files/{name}.txt"}, task="stamp", max_attempts=2)
                clock.now += rng.uniform(0.5, 2 + minute % 5)
                job = q.claim(rng.choice(["consumer1", "consumer2"]))
                if job is None:
                    continue
                clock.now += rng.uniform(7, 15)
                if rng.random() < 0.08:
                    q.fail(job, _error_text(), retry=False)
                else:
                    q.complete(job)
        clock.now = end - 30
        seeded = seed(url)
        for status, found in seeded.items():
            ids[status].extend(found)
        ids[JobStatus.FAILED] = sorted({j.id for j in q.list(JobFilter(statuses=(JobStatus.FAILED,)))})
        ids[JobStatus.PENDING] += q.enqueue_many(
            [{"path": f"data/files/{rng.choice(words)}-{rng.randrange(16**6):06x}.txt"} for _ in range(9)],
            task="stamp",
        )
    return ids


# -- hostile text: what an enqueuer, a worker or an operator could put in front of the apps' users ----
OTHER_HOST = "other.host"
BIDI_NAME = "invoice\u202etxt.exe"
"""Shown as ``invoiceexe.txt`` by a browser that honours the right-to-left override."""
BIDI_NAME_SHOWN = "invoicetxt.exe"


def hostile(tag: str) -> str:
    """Text with a Markdown link and image to another host, KaTeX, an autolink and a bidi override."""
    return (
        f"{tag} {BIDI_NAME} [click](http://{OTHER_HOST}/{tag}) ![x](http://{OTHER_HOST}/{tag}.png) "
        f"$\\huge {tag}$ www.{OTHER_HOST} <img src=http://{OTHER_HOST}/h.png>"
    )


def _hostile_error(tag: str) -> str:
    text = hostile(tag)
    return f"Traceback (most recent call last):\n  {text}\n$$\n\\huge {tag.upper()}\n$$\nValueError: {text}"


def seed_hostile(url: str) -> dict[str, int]:
    """Jobs whose path, payload, queue, task, errors, worker and operator names are all hostile text.

    Returns their ids: ``path`` (PENDING), ``payload`` (PENDING, no path), ``failed`` (FAILED twice:
    a worker with a hostile name, resubmitted in between by a hostile operator). Also registers a
    silent worker with a hostile name (an ops alert names it).
    """
    now = time.time()
    with Queue(url) as q:
        failed = q.enqueue({"path": f"data/files/{hostile('fp')}"}, queue=hostile("q"), task=hostile("t"))
        worker = hostile("w")
        job = q.claim(worker, queue=hostile("q"))
        assert job is not None and job.id == failed
        q.fail(job, _hostile_error("e1"), retry=False)
        q.resubmit(failed, actor=hostile("op"))
        job = q.claim(worker, queue=hostile("q"))
        assert job is not None and job.id == failed
        q.fail(job, _hostile_error("e2"), retry=False)
        path = q.enqueue({"path": f"data/files/{hostile('p')}"}, task=hostile("t2"))
        payload = q.enqueue({"note": hostile("n"), "name": BIDI_NAME}, queue=hostile("q2"))
        q.register_worker(
            WorkerInfo(id=hostile("id"), name=hostile("silent"), host=hostile("h"), pid=66,
                       queues=(hostile("q"),), started_at=now - 900, last_seen_at=now - 600)
        )  # fmt: skip
    return {"path": path, "payload": payload, "failed": failed}
