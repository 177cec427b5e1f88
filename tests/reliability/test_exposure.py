"""Item 12: exposure. The web apps listen on 127.0.0.1 only, whichever way and from whichever
directory they are started; they answer only to the loopback host names and send no traceback to
the browser. A manager with a password set shows nothing of the queue and offers no action until
the password is given (its callbacks check the password again as a second line)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, Recorder
from polling import wait_for
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

import jobq
from jobq.web import streamlit_command

MANAGER = REPO / "src" / "manager" / "manager.py"
OPS = REPO / "src" / "ops" / "ops.py"
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]
SAFE_FLAGS = [
    "--server.address 127.0.0.1",
    *(f"--server.allowedHosts {name}" for name in LOOPBACK_NAMES),
    "--client.showErrorDetails none",
]


def test_every_way_to_start_the_apps_binds_loopback_answers_loopback_names_and_hides_tracebacks() -> None:
    # The repo's config, and the same file next to each app script (Streamlit reads a config file
    # next to the script after the working directory's, so it applies from any directory).
    for path in (
        REPO / ".streamlit" / "config.toml",
        MANAGER.parent / ".streamlit" / "config.toml",
        OPS.parent / ".streamlit" / "config.toml",
        jobq.web.app_path("manager").parent / ".streamlit" / "config.toml",
    ):
        config = tomllib.loads(path.read_text())
        assert config["server"]["address"] == "127.0.0.1", path
        assert config["server"]["allowedHosts"] == LOOPBACK_NAMES, path
        assert config["client"]["showErrorDetails"] == "none", path
    for app in ("manager", "ops"):  # jobq manager / jobq ops
        command = " ".join(streamlit_command(app))
        assert all(flag in command for flag in SAFE_FLAGS), command
    programs = re.findall(r"(?m)^command=.*streamlit run.*$", (REPO / "supervisord.conf").read_text())
    assert len(programs) == 2 and all(flag in p for p in programs for flag in SAFE_FLAGS), programs


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.fixture(params=[("manager", "repo"), ("manager", "elsewhere"), ("ops", "elsewhere")], ids="-".join)
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """The seed's own command, ``streamlit run src/<app>/<app>.py``, from the repo (its config
    applies) or from another directory (no ``.streamlit/`` there)."""
    app, where = request.param
    script = MANAGER if app == "manager" else OPS
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "JOBQ_DATABASE_URL": f"sqlite:///{tmp_path}/q.db", "JOBQ_DATA_DIR": str(tmp_path)}
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed in the finalizer
    # headless: never wait at Streamlit's first-run e-mail prompt (it does not change the address)
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.headless", "true"]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=REPO if where == "repo" else tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_the_seeds_streamlit_command_listens_on_loopback_only(served: int, record: Recorder) -> None:
    wait_for(lambda: healthy(served), 90, "the app to answer on 127.0.0.1")
    addresses = listening_addresses(served)
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1
    record("exposure: streamlit run binds", backend="n/a", jobs=0, faults=0, lost=0, duplicated=0,
           listening=sorted(addresses))  # fmt: skip
    assert addresses and addresses <= loopback, addresses


def test_manager_with_a_password_shows_and_does_nothing_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Recorder
) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    with jobq.Queue(url) as q:
        pending = q.enqueue({"path": "data/files/a.txt"}, task="stamp")
        failed = q.enqueue({"path": "data/files/b.txt"}, task="stamp", max_attempts=1)
        job = q.claim("w")
        assert job is not None and job.id == pending
        q.release(job)
        job = q.claim("w")
        assert job is not None
        q.fail(job, "boom", retry=False) if job.id == failed else None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.setenv("JOBQ_MANAGER_PASSWORD", "s3cret")
    with jobq.Queue(url) as q:
        before = {i: q.get(i).status for i in (pending, failed)}

    at = AppTest.from_file(str(MANAGER), default_timeout=60)
    with patch_config_options({"server.address": "127.0.0.1"}):  # as served: AppTest serves nothing
        at.run()
        assert not at.exception
        page = "\n".join(str(getattr(node, "proto", "")) for node in at._tree)
        shown = [word for word in ("a.txt", "b.txt", "q.db", "PENDING", "FAILED", "boom") if word in page]
        buttons = [b.label for b in at.button]
        # Session state a forged websocket message could set is widget state; the login is not a widget.
        at.session_state["login_password"] = "guess"
        at.run()
        forged = [b.label for b in at.button]
    with jobq.Queue(url) as q:
        after = {i: q.get(i).status for i in (pending, failed)}
        actions = [e for i in (pending, failed) for e in q.events(i) if e.kind in ("resubmitted", "cancelled")]
    record("exposure: manager password", backend="sqlite", jobs=2, faults=2, lost=0, duplicated=0,
           refused=len(actions) == 0 and not shown)  # fmt: skip
    assert shown == [], shown
    assert buttons == forged == ["Unlock"], (buttons, forged)
    assert after == before and not actions, "no action went through without the password"
    assert not at.exception
