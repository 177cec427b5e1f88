"""Serving the apps with the real ``streamlit run`` and driving Debian's Chromium (Playwright) for the
browser tests: free ports, health polling, servers stopped by PID in finalizers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
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


#: Elements whose text must never be cut: column headers, status badges, buttons, metric labels,
#: values and their pills, subheaders. (Table cells are drawn on a canvas: not checked here.)
CUT_SELECTORS = (
    '[data-testid="stMarkdownContainer"] strong, [data-testid="stMarkdownContainer"] span[class*="badge" i], '
    '[data-testid="stMarkdownContainer"] code, button p, [data-testid="stMetricLabel"] p, '
    '[data-testid="stMetricValue"] div, [data-testid="stMetricDelta"] div, h1, h2, h3'
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


def cut_elements(page: Any) -> dict[str, Any]:
    """What ``CUT_ELEMENTS_JS`` finds on ``page`` (a Playwright page): ``checked`` and ``cut``."""
    result: dict[str, Any] = page.evaluate(CUT_ELEMENTS_JS, CUT_SELECTORS)
    return result
