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
