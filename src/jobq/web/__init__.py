"""jobq's web apps: the manager (resubmit, cancel, enqueue) and the ops console (watch).

Both are Streamlit pages (``manager.py``, ``ops.py``) over the public API and Streamlit-free
models: ``views.py`` (what both apps show: statuses, times, payloads, job rows), ``manager_model.py``
and ``ops_model.py`` (each app's own), ``safety.py`` (untrusted text made safe to show) and
``access.py`` (passwords, login guard, where an app may serve). ``_page.py`` is the Streamlit
glue both pages share. This module imports no Streamlit, so the CLI can call
:func:`launch` cheaply.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from jobq.errors import ConfigError

APPS: dict[str, str] = {"manager": "manager.py", "ops": "ops.py"}
"""App name -> its Streamlit script in this package."""
DEFAULT_PORTS: dict[str, int] = {"manager": 8501, "ops": 8502}
"""Default ports: the manager on 8501 (Streamlit's own default), ops on 8502."""
HOST_DEFAULT = "127.0.0.1"
ALLOWED_HOSTS_DEFAULT: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""Host names the apps answer to (``server.allowedHosts``): a page under any other name, e.g. a
DNS-rebinding attacker's name resolved to 127.0.0.1, gets no session (``access.host_allowed``)."""
SHOW_ERROR_DETAILS = "none"
"""``client.showErrorDetails``: no traceback (server paths) in the browser."""


def app_path(app: str) -> Path:
    """The Streamlit script of ``app`` (``"manager"`` or ``"ops"``). Raises ConfigError otherwise."""
    try:
        return Path(__file__).resolve().parent / APPS[app]
    except KeyError:
        raise ConfigError(f"unknown app {app!r}: choose one of {', '.join(APPS)}") from None


def streamlit_command(app: str, port: int | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that serves ``app``: headless, bound to 127.0.0.1, answering only to the
    loopback host names, no tracebacks in the browser, no usage statistics.

    ``extra_args`` are appended: a later flag wins (``--server.address 0.0.0.0`` together with a
    password, ``JOBQ_MANAGER_PASSWORD``, to expose it: without one the app refuses to serve), and
    ``--server.allowedHosts NAME`` adds a name the app answers to.
    """
    chosen = DEFAULT_PORTS.get(app, 8501) if port is None else port
    if not 0 < chosen < 65536:
        raise ConfigError(f"port must be between 1 and 65535, not {chosen}")
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path(app)),
        "--server.headless", "true",
        "--server.address", HOST_DEFAULT,
        "--server.port", str(chosen),
        *(arg for host in ALLOWED_HOSTS_DEFAULT for arg in ("--server.allowedHosts", host)),
        "--client.showErrorDetails", SHOW_ERROR_DETAILS,
        "--browser.gatherUsageStats", "false",
        *extra_args,
    ]  # fmt: skip


def _last_option(command: Sequence[str], name: str) -> str | None:
    """The value of ``name`` in a Streamlit command line (``--name V`` or ``--name=V``): the last
    one given wins, as it does for Streamlit."""
    value = None
    for i, arg in enumerate(command):
        if arg == name and i + 1 < len(command):
            value = command[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def check_port_free(command: Sequence[str]) -> None:
    """Raise ConfigError when the address and port ``command`` serves on are taken.

    Streamlit says only "Port N is not available" (no ``jobq: error:`` line) after its start-up;
    this names the port and the way out. Bound as Streamlit's server binds (SO_REUSEADDR), so a
    port left in TIME_WAIT by an app just stopped counts as free. A name that does not resolve, or
    a port that is not a number, is left to Streamlit to report."""
    address = _last_option(command, "--server.address") or HOST_DEFAULT
    try:
        port = int(_last_option(command, "--server.port") or "")
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError):
        return
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {address} is in use (another jobq app, or another program): "
                    "choose another with --port"
                ) from None
            # Anything else (an address not on this host, a port below 1024) is Streamlit's to say.


def launch(app: str, port: int | None = None, extra_args: Sequence[str] = ()) -> NoReturn:
    """Replace this process with ``streamlit run`` serving ``app`` (what ``jobq manager`` / ``jobq ops`` do).

    Example: ``launch("ops", 8502)``. Raises ConfigError for an unknown app, a bad port or one in use.
    """
    command = streamlit_command(app, port, extra_args)
    check_port_free(command)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


__all__ = [
    "ALLOWED_HOSTS_DEFAULT",
    "APPS",
    "DEFAULT_PORTS",
    "app_path",
    "check_port_free",
    "launch",
    "streamlit_command",
]
