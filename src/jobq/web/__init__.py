"""jobq's web apps: the manager (resubmit, cancel, enqueue) and the ops console (watch).

Both are Streamlit pages (``manager.py``, ``ops.py``) over the public API and Streamlit-free
models: ``views.py`` (what both apps show: statuses, times, payloads, job rows), ``manager_model.py``
and ``ops_model.py`` (each app's own), ``safety.py`` (untrusted text made safe to show) and
``access.py`` (passwords, login guard, where an app may serve). ``_page.py`` is the Streamlit
glue both pages share. This module imports no Streamlit, so the CLI can call
:func:`launch` cheaply.
"""

from __future__ import annotations

import os
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


def launch(app: str, port: int | None = None, extra_args: Sequence[str] = ()) -> NoReturn:
    """Replace this process with ``streamlit run`` serving ``app`` (what ``jobq manager`` / ``jobq ops`` do).

    Example: ``launch("ops", 8502)``. Raises ConfigError for an unknown app or a bad port.
    """
    command = streamlit_command(app, port, extra_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


__all__ = ["ALLOWED_HOSTS_DEFAULT", "APPS", "DEFAULT_PORTS", "app_path", "launch", "streamlit_command"]
