"""Reading supervisord's program states (jobq.web.supervisor) from a real supervisord, over its
unix socket with credentials, as the ops console does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobq.web import ops_model, supervisor
from tests.polling import wait_for

BIN = Path(sys.executable).parent


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Path]:
    """A supervisord with one program that runs and one that cannot start; its config's path."""
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            [unix_http_server]
            file=%(here)s/supervisor.sock
            chmod=0700
            username=ops
            password=p@ss:word/1

            [supervisorctl]
            serverurl=unix://%(here)s/supervisor.sock
            username=ops
            password=p@ss:word/1

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

            [supervisord]
            logfile=%(here)s/supervisord.log
            pidfile=%(here)s/supervisord.pid
            user=root
            nodaemon=false

            [program:steady]
            command={sys.executable} -c "import time; time.sleep(600)"
            startsecs=0

            [program:crashloop]
            command={sys.executable} -c "raise SystemExit(3)"
            startsecs=1
            startretries=1
            """
        )
    )
    subprocess.run([BIN / "supervisord", "-c", conf], check=True, cwd=tmp_path)
    pidfile = tmp_path / "supervisord.pid"
    try:
        wait_for(pidfile.exists, 30, "supervisord's pidfile")
        yield conf
    finally:
        # Shut it down through its own interface (its children stop with it), then wait for it to go.
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        subprocess.run([BIN / "supervisorctl", "-c", conf, "shutdown"], check=False, capture_output=True)
        if pid is not None:
            wait_for(lambda: not pidfile.exists(), 30, "supervisord to exit")


def test_programs_supervisord_gave_up_on_are_named(supervisord: Path) -> None:
    where = supervisor.socket_from_conf(supervisord)
    assert where == supervisor.SupervisorSocket(str(supervisord.parent / "supervisor.sock"), "ops", "p@ss:word/1")

    def states() -> dict[str, str] | None:
        found = {p.name: p.state for p in supervisor.read_programs(where)}
        return found if found.get("crashloop") == "FATAL" and found.get("steady") == "RUNNING" else None

    wait_for(states, 60, "crashloop FATAL and steady RUNNING")
    (bad,) = supervisor.troubled(supervisor.read_programs(where))
    assert bad.name == "crashloop"
    alerts = ops_model.compute_alerts(ops_model_stats(), [], 0.0, programs=[bad])
    assert any(a.level == "error" and a.message.startswith("supervisord: crashloop FATAL") for a in alerts)


def test_wrong_credentials_and_a_missing_socket_fail_with_an_error(supervisord: Path, tmp_path: Path) -> None:
    where = supervisor.socket_from_conf(supervisord)
    assert where is not None
    with pytest.raises(xmlrpc.client.ProtocolError):
        supervisor.read_programs(supervisor.SupervisorSocket(where.path, "ops", "wrong"))
    with pytest.raises(OSError):
        supervisor.read_programs(supervisor.SupervisorSocket(str(tmp_path / "absent.sock")))


def test_which_config_an_app_reads(tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[unix_http_server]\nfile=%(here)s/s.sock\n")
    assert supervisor.configured_socket({}, tmp_path) is None  # not under supervisord, nothing named
    under = {"SUPERVISOR_SERVER_URL": "unix:///elsewhere/x.sock"}
    assert supervisor.configured_socket(under, tmp_path) == supervisor.SupervisorSocket("/elsewhere/x.sock")
    named = {supervisor.CONF_ENV: str(conf)}
    assert supervisor.configured_socket(named, Path("/")) == supervisor.SupervisorSocket(f"{tmp_path}/s.sock")
    assert supervisor.configured_socket({**under, supervisor.CONF_ENV: "off"}, tmp_path) is None


def ops_model_stats() -> ops_model.QueueStats:
    return ops_model.QueueStats({}, {}, None, 0, 0, 0)
