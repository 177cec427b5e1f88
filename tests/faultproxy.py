"""A TCP proxy in front of PostgreSQL that can lose the reply to a COMMIT.

The commit reaches the server and is applied; the client's connection is then cut before the
server's answer gets back, exactly what a network fault or a server crash right after commit
does. The client cannot know whether its transaction happened: the "unknown outcome" case.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Iterator


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._trigger: bytes | None = None
        self.lost_replies = 0
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next_commit_reply(self, after: bytes) -> None:
        """Cut the next connection whose transaction sent ``after`` right after its COMMIT is sent
        to the server (so it is applied), before the server's reply reaches the client."""
        with self._lock:
            self._trigger = after

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            state = {"seen": False, "drop": False}
            threading.Thread(target=self._to_server, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, state), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    trigger = self._trigger
                    if trigger is not None and trigger in data:
                        state["seen"] = True
                    # The COMMIT message itself (its text ends with NUL), not the word in some SQL.
                    if state["seen"] and b"COMMIT\x00" in data and trigger is not None:
                        self._trigger = None
                        state["drop"] = True  # before sending: the reply must find it set
                server.sendall(data)
        _close(client, server)

    def _to_client(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["drop"]:
                    with self._lock:
                        self.lost_replies += 1
                    break  # the COMMIT was applied; its reply never arrives
                client.sendall(data)
        _close(client, server)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                _close(s)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


@contextlib.contextmanager
def proxied(url: str) -> Iterator[tuple[str, FaultProxy]]:
    """``url`` rewritten to go through a FaultProxy (closed afterwards, also on failure)."""
    parts = urllib.parse.urlsplit(url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    try:
        yield urllib.parse.urlunsplit(parts._replace(netloc=new)), proxy
    finally:
        proxy.close()
