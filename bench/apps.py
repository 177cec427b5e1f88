"""Render time of the manager and ops apps on a database of many jobs, in a real browser.

Each app is served by the real ``streamlit run`` (``jobq.web.streamlit_command``) and driven by
Debian's Chromium through Playwright, as an operator would use it:

- **first full render**: from ``page.goto`` until the script run has finished
  (``stApp[data-test-script-state=notRunning]``) and the page's last parts are drawn (the
  manager's job table with its rows, ops' four chart images and the open tab of its tables). The
  first page a fresh server serves also pays Python's imports: reported apart as ``(cold)``. The
  figure is the median of ``RENDER_REPEATS`` new pages after it, each a new session of the app,
  in a browser that has opened the app before (an operator's: Streamlit's hashed JS bundles are
  served cacheable, so it loads them from its cache). The same in a new browser profile (nothing
  cached: Streamlit's JS bundles fetched and compiled again) is reported as ``(new browser profile)``.
- **interactions** (median of ``INTERACTION_REPEATS``): from the click or key press until the
  rerun it starts has finished and its effect is on the page. Manager: selecting a row (a click
  on its check box in the job table), a filter change (payload search), the next page. Ops: a
  tab of tables opened, the latest jobs' status filter, the chart window.

Targets (``bench/report.py``): a first render under 2 s, each interaction under 1 s.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import make_payload

REPO = Path(__file__).resolve().parent.parent
APPS = ("manager", "ops")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RENDER_REPEATS = 3
INTERACTION_REPEATS = 3
START_TIMEOUT_SECONDS = 120.0
UI_TIMEOUT_MS = 120_000
VIEWPORT = {"width": 1920, "height": 1200}
RENDER_TARGET_SECONDS = 2.0
INTERACTION_TARGET_SECONDS = 1.0

#: Counts finished script runs (the attribute turning to notRunning), so that a click can wait
#: for the rerun it caused, fragment runs included.
WATCH_RUNS_JS = """() => {
  if (window.__jobqRuns !== undefined) return;
  window.__jobqRuns = 0;
  const app = document.querySelector('[data-testid="stApp"]');
  new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') === 'notRunning') window.__jobqRuns += 1;
  }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
#: The run has finished and every element is drawn (lazily loaded widgets show a skeleton first).
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return app !== null && app.getAttribute('data-test-script-state') === 'notRunning'
    && document.querySelectorAll('[data-testid="stSkeleton"]').length === 0;
}"""
#: What a complete page shows last, per app (evaluated after the run finished).
DRAWN_JS = {
    "manager": """() => {
      const table = document.querySelector('[class*="st-key-jobs_"] .jobq-jobs');
      return table !== null && table.querySelectorAll('table tr').length >= 2;
    }""",
    # The four charts' images decoded and drawn, and the open tab's table (the queues' HTML table
    # on a new page, or a data grid after a tab was opened) with rows.
    "ops": """() => {
      const charts = [...document.querySelectorAll('.jobq-chart .plot img')]
        .filter(img => img.complete && img.getBoundingClientRect().width > 0);
      const tab = document.querySelector('[data-testid="stTabPanel"]:not([data-st-inactive])');
      return charts.length >= 4 && tab !== null && tab.querySelectorAll('table tr').length >= 2;
    }""",
}


def _fill(url: str, jobs: int) -> None:
    """``jobs`` jobs in a realistic mix: mostly completed, some failed, some pending."""
    from jobq import Queue

    with Queue(url) as q:
        for start in range(0, jobs, 5_000):
            q.enqueue_many([make_payload(n) for n in range(start, min(jobs, start + 5_000))])
        done = int(jobs * 0.9)
        while done > 0:
            got = q.claim_many("bench-fill", min(1_000, done))
            if not got:
                break
            q.complete_many([(j, None) for j in got[: len(got) - len(got) // 20]])
            for j in got[len(got) - len(got) // 20 :]:
                q.fail(j, "bench: a failure for the failed list", retry=False)
            done -= len(got)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _serve(app: str, url: str, workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    from jobq.web import streamlit_command

    port = _free_port()
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_OPERATOR": "bench", "PYTHONUNBUFFERED": "1"}
    for name in ("JOBQ_MANAGER_PASSWORD", "JOBQ_OPS_PASSWORD", "JOBQ_SUPERVISOR_CONF", "SUPERVISOR_SERVER_URL"):
        env.pop(name, None)
    log = open(os.path.join(workdir, f"{app}.log"), "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(
        streamlit_command(app, port, ["--server.fileWatcherType", "none"]),
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"{app} did not start (see {app}.log)")
        time.sleep(0.2)
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``): the server's
    work per render, which a loaded machine does not distort the way it distorts wall time."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Timing = tuple[float, float, float]
"""Wall seconds; the server's CPU seconds meanwhile; the browser's CPU seconds meanwhile (Chromium
and Playwright's driver: every process under this one but the server; they work in parallel, so
this can exceed the wall time). Load distorts the CPU figures far less than the wall time."""


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _browser_cpu(server: int) -> float:
    skip = {server, *_descendants(server)}
    total = 0.0
    for pid in _descendants(os.getpid()):
        if pid not in skip:
            with contextlib.suppress(OSError):  # gone meanwhile
                total += cpu_seconds(pid)
    return total


def _open(opener: Any) -> Any:
    page = opener.new_page(**({} if hasattr(opener, "browser") else {"viewport": VIEWPORT}))
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def _first_render(opener: Any, app: str, port: int, pid: int) -> tuple[Timing, Any]:
    """A new page from ``opener`` (a browser: a new profile each time; a context: one profile,
    its cache kept) rendered from ``goto`` until complete."""
    page = _open(opener)
    busy, cpu, started = _browser_cpu(pid), cpu_seconds(pid), time.perf_counter()
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function(f"() => ({IDLE_JS})() && ({DRAWN_JS[app]})()", polling="raf")
    seconds = time.perf_counter() - started
    timing = (seconds, cpu_seconds(pid) - cpu, _browser_cpu(pid) - busy)
    page.evaluate(WATCH_RUNS_JS)
    return timing, page


def _timed(page: Any, pid: int, action: Callable[[], None], done_js: str, step: str = "") -> Timing:
    """From ``action()`` until a script run finished after it and ``done_js`` holds. ``step``
    names the interaction in the error when that never comes."""
    before = page.evaluate("() => window.__jobqRuns")
    busy, cpu, started = _browser_cpu(pid), cpu_seconds(pid), time.perf_counter()
    action()
    try:
        page.wait_for_function(f"() => window.__jobqRuns > {before} && ({IDLE_JS})() && ({done_js})()", polling="raf")
    except Exception as exc:
        state = page.evaluate(f"() => [window.__jobqRuns, ({IDLE_JS})(), ({done_js})()]")
        raise RuntimeError(
            f"{step or 'a step'}: waiting for {done_js[:120]!r}: runs, idle, done = {state} (runs before: {before})"
        ) from exc
    seconds, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    return seconds, cpu, _browser_cpu(pid) - busy


def _manager_interactions(page: Any, pid: int, jobs: int) -> dict[str, list[Timing]]:
    out: dict[str, list[Timing]] = {"select a row": [], "filter change": [], "next page": []}
    caption = "[...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')].map(c => c.innerText).join(' ')"
    for n in range(INTERACTION_REPEATS):
        # Row n's check box (the first column of jobq.web.job_table).
        box = page.locator('[class*="st-key-jobs_"] .jobq-jobs tbody input[type="checkbox"]').nth(n)
        out["select a row"].append(_timed(page, pid, box.click, f"() => ({caption}).includes('· {n + 1} selected')"))
    search = page.get_by_label("Search payload")
    # The newest job (pending: the newest tenth is), then the 100 around it, then all again.
    newest = f"job-{jobs - 1:07d}"
    for text, matching in ((newest, "of 1 matching"), (newest[:-2], "of 100 matching"), ("", "Showing 1-25 of")):

        def type_it(text: str = text) -> None:
            search.fill(text)
            search.press("Enter")

        seconds = _timed(page, pid, type_it, f"() => ({caption}).includes('{matching}')")
        if text:  # going back to everything (for the paging below) is not counted
            out["filter change"].append(seconds)
    for n in range(INTERACTION_REPEATS):
        first = n * 25 + 26
        next_page = page.get_by_test_id("stPaginationNext").first
        out["next page"].append(_timed(page, pid, next_page.click, f"() => ({caption}).includes('Showing {first:,}-')"))
    return out


def _ops_interactions(page: Any, pid: int) -> dict[str, list[Timing]]:
    out: dict[str, list[Timing]] = {"open a tab": [], "status filter": [], "chart window": []}
    # Refresh off first: a timed fragment run must not be taken for the interaction's.
    page.get_by_label("Refresh every").click()
    page.get_by_role("option", name="Off").click()
    page.wait_for_function(IDLE_JS, polling="raf")
    # The tabs are lazy: each opened tab is read and drawn then (ending on the latest jobs').
    for view in ("Activity", "Queues", "Latest jobs")[:INTERACTION_REPEATS]:
        tab = page.get_by_role("tab", name=view, exact=True)
        out["open a tab"].append(_timed(page, pid, tab.click, DRAWN_JS["ops"], f"open the {view} tab"))
    for status in ("FAILED", "PENDING", "All")[:INTERACTION_REPEATS]:
        button = page.locator(".st-key-jobs_status").get_by_role("radio", name=status, exact=True)
        out["status filter"].append(_timed(page, pid, button.click, DRAWN_JS["ops"], f"status filter {status}"))
    for window in ("15 minutes", "6 hours", "1 hour")[:INTERACTION_REPEATS]:

        def choose(window: str = window) -> None:
            page.get_by_label("Chart window").click()
            page.get_by_role("option", name=window).click()

        out["chart window"].append(_timed(page, pid, choose, DRAWN_JS["ops"], f"chart window {window}"))
    return out


def measure_apps(workdir: str, jobs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Seconds per app: ``NAME`` (first full render, warm server), ``NAME (cold)``, one entry per
    interaction (``NAME: select a row``, ...), each also as ``... (server CPU)`` and ``... (browser CPU)``
    (see ``Timing``). A note instead where it could not be measured."""
    out: dict[str, Any] = {"jobs": jobs, "browser": "Chromium (Playwright), 1920x1200"}
    if not os.access(CHROMIUM, os.X_OK):
        return {**out, **{a: f"not measured: no {CHROMIUM} (scripts/install-system-deps.sh)" for a in APPS}}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        return {**out, **{a: f"not measured: {exc}" for a in APPS}}
    path = os.path.join(workdir, "apps.db")
    url = f"sqlite:///{path}"
    t0 = time.perf_counter()
    _fill(url, jobs)
    log(f"  filled {jobs:,} jobs in {time.perf_counter() - t0:.1f} s")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for app in APPS:
                try:
                    proc, port = _serve(app, url, workdir)
                except RuntimeError as exc:
                    out[app] = f"error: {exc}"
                    continue
                context = browser.new_context(viewport=VIEWPORT)  # the returning operator's profile
                try:
                    cold, page = _first_render(browser, app, port, proc.pid)
                    page.close()
                    fresh = []
                    for _ in range(RENDER_REPEATS):
                        timing, page = _first_render(browser, app, port, proc.pid)
                        fresh.append(timing)
                        page.close()
                    _, page = _first_render(context, app, port, proc.pid)  # fills its cache: not counted
                    page.close()
                    renders = []
                    for _ in range(RENDER_REPEATS):
                        timing, page = _first_render(context, app, port, proc.pid)
                        renders.append(timing)
                        if len(renders) < RENDER_REPEATS:
                            page.close()
                    out[app] = statistics.median(t[0] for t in renders)
                    out[f"{app} (server CPU)"] = statistics.median(t[1] for t in renders)
                    out[f"{app} (browser CPU)"] = statistics.median(t[2] for t in renders)
                    out[f"{app} (new browser profile)"] = statistics.median(t[0] for t in fresh)
                    out[f"{app} (new browser profile, browser CPU)"] = statistics.median(t[2] for t in fresh)
                    out[f"{app} (cold)"] = cold[0]
                    steps = (
                        _manager_interactions(page, proc.pid, jobs)
                        if app == "manager"
                        else _ops_interactions(page, proc.pid)
                    )
                    page.close()
                    for what, times in steps.items():
                        out[f"{app}: {what}"] = statistics.median(t[0] for t in times)
                        out[f"{app}: {what} (server CPU)"] = statistics.median(t[1] for t in times)
                        out[f"{app}: {what} (browser CPU)"] = statistics.median(t[2] for t in times)
                    shown = ", ".join(
                        f"{k} {v:.2f} s" for k, v in out.items() if k.startswith(app) and isinstance(v, float)
                    )
                    log(f"  {shown}")
                except Exception as exc:  # noqa: BLE001 - an app that fails is a note, not a crash
                    key = app if app not in out else f"{app}: error"
                    out[key] = f"error: {type(exc).__name__}: {exc}"[:300]
                    log(f"  {key}: {out[key]}")
                finally:
                    context.close()
                    _stop(proc)
        finally:
            browser.close()
    return out


if __name__ == "__main__":  # python -m bench.apps [JOBS]: this section alone
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jobq-apps-") as where:
        result = measure_apps(where, int(sys.argv[1]) if len(sys.argv) > 1 else 125_000, print)
    for key, value in result.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
