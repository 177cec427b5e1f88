"""Serving the apps with the real ``streamlit run`` and driving Debian's Chromium (Playwright) for the
browser tests: free ports, health polling, servers stopped by PID in finalizers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

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
START_TIMEOUT_SECONDS = 90.0
UI_TIMEOUT_MS = 60_000
#: The logs of the servers a test started (``serve``): their tails go into the report of a test
#: that fails (``conftest.pytest_runtest_makereport``), to tell a lost session or a script's error
#: from a page that drew late.
APP_LOGS = pytest.StashKey[list[Path]]()
APP_LOG_TAIL_LINES = 150
#: The page's text printed when a test fails inside ``chromium_page``: what the browser showed.
PAGE_TEXT_CHARS = 4_000


def need_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing: run scripts/install-system-deps.sh (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``check()`` is true, backing off; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def serve(
    request: pytest.FixtureRequest,
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    port: int,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    """Start ``command`` (a ``streamlit run`` on ``port``), stopped by its PID in a finalizer; wait
    until it answers its health check."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finalizer
    request.node.stash.setdefault(APP_LOGS, []).append(log_path)
    # Debug: a line a script run and each session made, ~10 lines a click; read only when it fails.
    env = {"STREAMLIT_LOGGER_LEVEL": "debug", **env}
    proc = subprocess.Popen(
        list(command), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        log.close()

    request.addfinalizer(stop)
    poll(lambda: proc.poll() is not None or healthy(port), f"streamlit on port {port}", START_TIMEOUT_SECONDS)
    assert proc.poll() is None, log_path.read_text()
    return proc


#: Elements whose text must never be cut: column headers (of the HTML tables; a data grid draws
#: its own on a canvas: not checked here), status badges, buttons, metric labels, values and their
#: pills, subheaders.
CUT_SELECTORS = (
    '[data-testid="stMarkdownContainer"] strong, [data-testid="stMarkdownContainer"] span[class*="badge" i], '
    '[data-testid="stMarkdownContainer"] code, button p, .jobq-metric .label span, '
    ".jobq-metric .value, .jobq-metric .note, h1, h2, h3, "
    ".jobq-jobs th span, .jobq-table th span"
)
CUT_ELEMENTS_JS = """(selectors) => {
  // A header, badge or button label is cut when its box is narrower than its text (ellipsis,
  // overflow) or broken over two lines ("tri es", "#109 827"): taller than one line.
  const cut = [];
  let checked = 0;
  const over = (e) => e && e.scrollWidth > e.clientWidth + 1;
  for (const el of document.querySelectorAll(selectors)) {
    const box = el.getBoundingClientRect();
    if (box.width === 0) continue;
    checked += 1;
    const line = parseFloat(getComputedStyle(el).lineHeight) || parseFloat(getComputedStyle(el).fontSize) * 1.6;
    const oneWord = !el.innerText.trim().includes(" ");
    const heading = el.tagName === 'STRONG' || /^H[1-3]$/.test(el.tagName);
    const isLabel = !heading || el.innerText.length < 24;  // a sentence may wrap
    const broken = isLabel && box.height > line * 1.5 && (oneWord || !heading);
    if (broken || over(el) || over(el.parentElement)) {
      cut.push(el.innerText.slice(0, 40));
    }
  }
  return {checked, cut};
}"""


def serve_app(request: pytest.FixtureRequest, app: Path, tmp_path: Path, url: str) -> int:
    """Serve the Streamlit ``app`` on ``url``'s database from a folder of its own under ``tmp_path``
    (with the repository's ``.streamlit/config.toml``, no password, no supervisord), stopped when
    the test ends; returns its port."""
    import shutil
    import sys

    from seeding import REPO

    tmp_path = tmp_path / app.parent.name
    (tmp_path / ".streamlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_OPERATOR": "browser-test", "PYTHONUNBUFFERED": "1"}
    for name in ("JOBQ_OPS_PASSWORD", "JOBQ_MANAGER_PASSWORD", "JOBQ_SUPERVISOR_CONF", "SUPERVISOR_SERVER_URL"):
        env.pop(name, None)
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats",
               "false", "--server.fileWatcherType", "none"]  # fmt: skip
    serve(request, command, cwd=tmp_path, env=env, port=port, log_path=tmp_path / f"{app.stem}.log")
    return port


#: The job list's headers whose text (and sort mark) is wider than the header: cut with an
#: ellipsis. The generic check above reads each header's inline span, whose widths are 0.
CUT_HEADERS_JS = """(table) => [...document.querySelectorAll(table + ' th')]
  .filter(th => th.getBoundingClientRect().width > 0 && th.scrollWidth > th.clientWidth)
  .map(th => `${th.textContent.trim()}: ${th.scrollWidth} > ${th.clientWidth}`)"""


def cut_headers(page: Any) -> list[str]:
    """The manager's job-list headers that are cut on ``page`` (``CUT_HEADERS_JS``)."""
    found: list[str] = page.evaluate(CUT_HEADERS_JS, JOB_TABLE)
    return found


@contextlib.contextmanager
def chromium_page(width: int = 1366, height: int = 1200) -> Iterator[Any]:
    """A page of a headless Chromium (the system's), with the UI timeouts set; closed on the way
    out, also when the test fails. Skips the test where Chromium is missing."""
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(UI_TIMEOUT_MS)
            try:
                yield page
            except (Exception, pytest.fail.Exception):  # a failure: not a skip, not an interrupt
                print_page_text(page)
                raise
        finally:
            browser.close()


def print_page_text(page: Any) -> None:
    """Print what ``page`` shows (its first ``PAGE_TEXT_CHARS``), for the report of a failing test;
    a page that does not answer in a few seconds is said so."""
    try:
        text = page.inner_text("body", timeout=5_000)
    except Exception as exc:  # noqa: BLE001 - a hung or closed page: its report says so
        text = f"(the page's text could not be read: {exc})"
    print(f"--- the page's text when the test failed ---\n{text[:PAGE_TEXT_CHARS]}")


def app_log_tail(path: Path, lines: int = APP_LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a server's log (``serve``), undecodable bytes replaced."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(not read: {exc})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def cut_elements(page: Any) -> dict[str, Any]:
    """What ``CUT_ELEMENTS_JS`` finds on ``page`` (a Playwright page): ``checked`` and ``cut``."""
    result: dict[str, Any] = page.evaluate(CUT_ELEMENTS_JS, CUT_SELECTORS)
    return result


#: Tables (glide data grids, and the apps' HTML tables) wider than their box: they would scroll
#: sideways.
WIDE_TABLES_JS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"], .jobq-jobs, .jobq-table')]
  .filter(t => t.getBoundingClientRect().width > 0)
  .map(t => {
    const s = t.querySelector('.dvn-scroller') || t;
    const table = t.querySelector('table');
    const wide = Math.max(s.scrollWidth, table ? table.getBoundingClientRect().width : 0);
    const head = [...t.querySelectorAll('table th, table [role=columnheader]')].map(c => c.innerText.trim()).join('|');
    return wide > s.clientWidth + 1 ? `${head.slice(0, 80)}: ${wide} > ${s.clientWidth}` : null;
  })
  .filter(x => x !== null)"""


def wide_tables(page: Any) -> list[str]:
    """The tables on ``page`` that scroll sideways (their headers and widths); [] when all fit."""
    found: list[str] = page.evaluate(WIDE_TABLES_JS)
    return found


#: The charts drawn wider than their place (jobq.web.ops_charts: a panel, its image or an axis
#: label past the right edge of the charts' grid, or the grid past the page's column).
WIDE_CHARTS_JS = """() => [...document.querySelectorAll('.jobq-charts')].flatMap((grid) => {
  const edge = grid.getBoundingClientRect().right;
  const column = grid.closest('[data-testid="stVerticalBlock"]').getBoundingClientRect().right;
  const found = edge > column + 1 ? [`charts: ${Math.round(edge - column)} px past the column`] : [];
  grid.querySelectorAll('.jobq-chart').forEach((chart, i) => {
    for (const part of [chart, ...chart.querySelectorAll('img, .x span, .y')]) {
      const over = Math.round(part.getBoundingClientRect().right - edge);
      if (over > 0) found.push(`chart ${i + 1}: ${part.tagName} ${part.innerText || ''} ${over} px past`);
    }
  });
  return found;
})"""


def wide_charts(page: Any) -> list[str]:
    """The charts on ``page`` drawn past their column's right edge; [] when all fit."""
    found: list[str] = page.evaluate(WIDE_CHARTS_JS)
    return found


# -- the manager's job list (jobq.web.job_table: an HTML table, a check box per row) ----------------
JOB_TABLE = '[class*="st-key-jobs_"] .jobq-jobs'
#: The job list as the page shows it: job id -> the row's cell texts (the first, the check box's, empty).
JOB_ROWS_JS = """(selector) => {
  const table = document.querySelector(selector);
  if (table === null) return [];
  const rows = [...table.querySelectorAll('table tr')].map(tr => [...tr.children].map(c => c.innerText.trim()));
  const at = rows.length ? rows[0].indexOf('id') : -1;
  return at < 0 ? [] : rows.slice(1).filter(r => r.length > at && /^[0-9]+$/.test(r[at])).map(r => [r[at], r]);
}"""


def job_rows(page: Any) -> dict[int, list[str]]:
    """The manager's job list on ``page``, in order: job id -> the row's cell texts ({} when none)."""
    return {int(job_id): cells for job_id, cells in page.evaluate(JOB_ROWS_JS, JOB_TABLE)}


def wait_rows(page: Any, check: Callable[[dict[int, list[str]]], bool], what: str, timeout: float = 60.0) -> None:
    """Poll the manager's job list until ``check(rows)`` holds."""
    poll(lambda: check(job_rows(page)), what, timeout)


def click_job_row(page: Any, job_id: int) -> None:
    """Tick (or untick) a job's row in the manager's list: a click on its check box, as an operator does."""
    wait_rows(page, lambda rows: job_id in rows, f"job {job_id} in the list")  # a redrawn table fills anew
    box = page.locator(f'{JOB_TABLE} input[aria-label="Select job {job_id}"]')
    # While Streamlit redraws the list (after an action), the old table can stand beside the new
    # one for a moment: two boxes match, and a click then fails (seen once in a full run).
    poll(lambda: box.count() == 1, f"one check box for job {job_id}")
    box.click()


#: The ids of the job list's ticked rows (their check boxes' labels say "Select job N").
TICKED_JS = """(selector) => [...document.querySelectorAll(`${selector} tbody input:checked`)]
  .map(b => parseInt(b.getAttribute('aria-label').replace('Select job ', ''), 10))"""


def ticked_jobs(page: Any) -> set[int]:
    """The jobs whose rows the manager's list shows ticked."""
    return set(page.evaluate(TICKED_JS, JOB_TABLE))


def select_jobs(page: Any, *job_ids: int) -> None:
    """Tick these jobs' rows, one after the other, each once the page says it is selected."""
    selected = page.evaluate(SELECTED_COUNT_JS)
    for job_id in job_ids:
        click_job_row(page, job_id)
        selected += 1
        poll(lambda n=selected: bool(page.evaluate(SELECTED_COUNT_JS) == n), f"{selected} selected jobs")


#: The "N selected" of the manager's caption (-1 while it is not shown).
SELECTED_COUNT_JS = """() => {
  const text = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(c => c.innerText).join(' ');
  const found = text.match(/· ([0-9,]+) selected ·/);
  return found ? parseInt(found[1].replace(/,/g, ''), 10) : -1;
}"""
