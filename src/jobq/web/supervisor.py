"""What supervisord says about its programs, read over its XML-RPC unix socket (no Streamlit).

Ops alerts on programs supervisord gave up on (``FATAL``: it exited too quickly too often) or is
restarting again and again (``BACKOFF``): a crash loop that the workers table alone shows only
as a growing restart count. Where the socket is comes from a supervisord config file:
``JOBQ_SUPERVISOR_CONF`` names one (empty or ``off``: never ask); unset, an app that runs under
supervisord (it sets ``SUPERVISOR_SERVER_URL`` in its children's environment) reads
``supervisord.conf`` in its working directory, the one the seed's config sets. Only unix sockets
are read: the seed's config has no TCP server, and a socket path is local by construction.
"""

from __future__ import annotations

import configparser
import dataclasses
import http.client
import os
import socket
import urllib.parse
import xmlrpc.client
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SUPERVISOR_TIMEOUT_SECONDS_DEFAULT = 2.0
"""How long ops waits for supervisord's answer before it reports it unreachable."""
CONF_ENV = "JOBQ_SUPERVISOR_CONF"
#: supervisord's process states that need an operator.
ALERT_STATES = ("FATAL", "BACKOFF")


@dataclasses.dataclass(frozen=True, slots=True)
class SupervisorSocket:
    """Where and as whom to ask supervisord."""

    path: str
    username: str | None = None
    password: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ProgramState:
    """One process supervisord manages (``supervisor.getAllProcessInfo``)."""

    name: str
    """``group:name`` when the group is not the program itself, else ``name``."""
    state: str
    """supervisord's word: RUNNING, STARTING, BACKOFF, FATAL, STOPPED, EXITED, ..."""
    description: str = ""


def socket_from_conf(conf: Path, server_url: str | None = None) -> SupervisorSocket | None:
    """The unix socket and credentials of supervisord config ``conf`` (None without a socket).

    ``server_url`` (``unix:///path``, what supervisord gives its children) wins over the file's path.
    """
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"))
    parser.read(conf)
    here = str(conf.resolve().parent)

    def get(section: str, key: str) -> str | None:
        if not parser.has_option(section, key):
            return None
        return parser.get(section, key).replace("%(here)s", here).strip() or None

    path = None
    if server_url and server_url.startswith("unix://"):
        path = server_url.removeprefix("unix://")
    url = get("supervisorctl", "serverurl")
    if path is None and url and url.startswith("unix://"):
        path = url.removeprefix("unix://")
    if path is None:
        path = get("unix_http_server", "file")
    if path is None:
        return None
    username = get("supervisorctl", "username") or get("unix_http_server", "username")
    password = get("supervisorctl", "password") or get("unix_http_server", "password")
    return SupervisorSocket(path, username, password)


def configured_socket(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> SupervisorSocket | None:
    """The supervisord socket this app should read, as the module docstring says, or None."""
    env = os.environ if env is None else env
    explicit = env.get(CONF_ENV)
    if explicit is not None:
        if explicit.strip().lower() in ("", "off"):
            return None
        return socket_from_conf(Path(explicit), env.get("SUPERVISOR_SERVER_URL"))
    server_url = env.get("SUPERVISOR_SERVER_URL")
    conf = (cwd or Path.cwd()) / "supervisord.conf"
    if server_url and conf.is_file():
        return socket_from_conf(conf, server_url)
    return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        # get_host_info turns "user:password@localhost" into the Basic auth header.
        _, self._extra_headers, _ = self.get_host_info(host)
        connection = _UnixConnection(self._path, self._timeout)
        self._connection = host, connection  # so that close() (ServerProxy's __exit__) closes it
        return connection


def read_programs(where: SupervisorSocket, timeout: float = SUPERVISOR_TIMEOUT_SECONDS_DEFAULT) -> list[ProgramState]:
    """Every process supervisord manages, by name. Raises OSError or ``xmlrpc.client.Error``
    (refused, no socket, wrong credentials, timeout): the caller says supervisord is unreachable."""
    auth = ""
    if where.username:
        auth = urllib.parse.quote(where.username, safe="")
        if where.password:
            auth += ":" + urllib.parse.quote(where.password, safe="")
        auth += "@"
    proxy = xmlrpc.client.ServerProxy(f"http://{auth}localhost/RPC2", transport=_UnixTransport(where.path, timeout))
    with proxy:
        infos: Any = proxy.supervisor.getAllProcessInfo()
    return [_program(info) for info in (infos if isinstance(infos, list) else []) if isinstance(info, dict)]


def _program(info: Mapping[str, Any]) -> ProgramState:
    name, group = str(info.get("name", "")), str(info.get("group", ""))
    return ProgramState(
        name=name if not group or group == name else f"{group}:{name}",
        state=str(info.get("statename", "UNKNOWN")),
        description=str(info.get("description", "")),
    )


def troubled(programs: Sequence[ProgramState]) -> list[ProgramState]:
    """The programs in a state that needs an operator (FATAL, BACKOFF), by name."""
    return sorted((p for p in programs if p.state in ALERT_STATES), key=lambda p: p.name)
