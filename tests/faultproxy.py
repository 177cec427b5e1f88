"""A TCP proxy in front of PostgreSQL that can lose the reply to a commit.

The commit reaches the server and is applied; the client's connection is then cut before the
server's answer gets back, exactly what a network fault or a server crash right after commit
does. The client cannot know whether its transaction happened: the "unknown outcome" case.

A commit is a ``COMMIT`` or a statement sent alone in autocommit (jobq's one-statement calls): the
proxy recognises its reply by the ``ReadyForQuery`` message that reports the session idle again
(status ``I``), so it needs no knowledge of which form the client used.
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
        self._cut: bytes | None = None
        self.cuts = 0
        self.lost_replies = 0
        #: ReadyForQuery messages the server sent, but each connection's first (the end of its
        #: start-up, which a pool may do in the background at any time): one per round trip (each
        #: request the client waits on ends in Sync or a simple Query, answered by one). Counted on
        #: connections made with ``sslmode=disable``, whose server stream is messages from its
        #: first byte.
        self.round_trips = 0
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._hold: bytes | None = None
        self._released = threading.Event()
        #: Set once a connection sent what ``hold_replies_after`` waits for.
        self.holding = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_replies_after(self, sent: bytes) -> None:
        """Once the next connection sends ``sent``, forward nothing more the server sends it until
        ``release_replies``: its client waits as if the server were slow, or as a frozen client
        would leave them unread. What the client sends still goes through."""
        with self._lock:
            self._hold = sent

    def release_replies(self) -> None:
        self._released.set()

    def lose_next_commit_reply(self, after: bytes) -> None:
        """Cut the next connection that sends ``after`` when the reply reporting its transaction's
        commit comes back (the commit is applied), before that reply reaches the client."""
        with self._lock:
            self._trigger = after

    def cut_next(self, before: bytes) -> None:
        """Cut the next connection that sends ``before``, without forwarding it: the server never
        sees that request (a connection lost before anything commits, which is safe to retry)."""
        with self._lock:
            self._cut = before

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._closed:  # accepted while close() ran: the proxy is gone
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:  # close() ran while this one connected: it would outlive it
                    _close(client, server)
                    return
                self._sockets += [client, server]
            state = {"seen": False, "started": False}
            threading.Thread(target=self._to_server, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, state), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._cut is not None and self._cut in data:
                        self._cut = None
                        self.cuts += 1
                        break
                    if self._trigger is not None and self._trigger in data:
                        self._trigger = None  # one connection, once
                        state["seen"] = True  # before sending: the reply must find it set
                    if self._hold is not None and self._hold in data:
                        self._hold = None  # one connection, once
                        state["held"] = True  # before sending: the reply must find it set
                        self.holding.set()
                server.sendall(data)
        _close(client, server)

    def _to_client(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        pending = b""
        counted = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                counted = self._count_round_trips(counted + data, state)
                if state.get("held"):
                    self._released.wait()
                if not state["seen"]:
                    client.sendall(data)
                    continue
                # From the trigger on, the stream is read message by message (it starts at a
                # message boundary: the client sent the trigger after reading its last reply).
                pending += data
                while (found := _ready_for_query(pending)) is not None:
                    end, status = found
                    if status == b"I":  # the transaction committed; its reply never arrives
                        with self._lock:
                            self.lost_replies += 1
                        _close(client, server)
                        return
                    client.sendall(pending[:end])  # a reply inside the transaction
                    pending = pending[end:]
        _close(client, server)

    def _count_round_trips(self, buffer: bytes, state: dict[str, bool]) -> bytes:
        """Count the complete ReadyForQuery messages of ``buffer``; returns the incomplete rest."""
        while (found := _ready_for_query(buffer)) is not None:
            if state["started"]:
                with self._lock:
                    self.round_trips += 1
            state["started"] = True
            buffer = buffer[found[0] :]
        # Keep only the unfinished message: skip complete messages that are not ReadyForQuery.
        offset = 0
        while offset + 5 <= len(buffer):
            end = offset + 1 + int.from_bytes(buffer[offset + 1 : offset + 5], "big")
            if end > len(buffer):
                break
            offset = end
        return buffer[offset:]

    def close(self) -> None:
        """Refuse new connections and cut every open one: the server, as its clients see it, is
        gone. The listener is shut down first: closed alone while a thread waits in accept(), it
        kept listening (and the proxy kept proxying) until that accept() returned."""
        with self._lock:  # under the lock that registers a connection: none is left uncut
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._released.set()  # a held reply's thread goes on, to find its sockets closed
        with self._lock:
            for s in self._sockets:
                _close(s)


def _ready_for_query(buffer: bytes) -> tuple[int, bytes] | None:
    """Where the first complete ``ReadyForQuery`` message of ``buffer`` ends, and its status byte
    (``I`` idle, ``T`` in a transaction, ``E`` in a failed one); None if none is complete yet.
    Server messages are a type byte, then a 4-byte length that counts itself and the body."""
    offset = 0
    while offset + 5 <= len(buffer):
        end = offset + 1 + int.from_bytes(buffer[offset + 1 : offset + 5], "big")
        if end > len(buffer):
            return None
        if buffer[offset : offset + 1] == b"Z":
            return end, buffer[offset + 5 : offset + 6]
        offset = end
    return None


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
