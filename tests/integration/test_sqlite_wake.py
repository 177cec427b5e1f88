"""The SQLite wake-up channel under abuse: a local flood of datagrams, and workers rows that name
sockets which are not jobq's. Real abstract-namespace sockets; the flooder is another process
(in a thread it would share the GIL and pace itself to the listener)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import wait_for

from jobq.backends.sqlite.wake import (
    WAKE_BURST,
    WAKE_COALESCE_SECONDS,
    SqliteListener,
    WakeNotifier,
    is_jobq_address,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")

FLOOD_SECONDS = 1.0

# Sends one-byte datagrams to argv[1] as fast as it can for argv[2] seconds; prints how many it
# sent and how many the kernel accepted (a full queue refuses the rest: EAGAIN).
_FLOOD = """
import socket, sys, time
address, seconds = "\\0" + sys.argv[1][1:], float(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
print("ready", flush=True)
tried = accepted = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(64):
        tried += 1
        try:
            s.sendto(b"!", address)
            accepted += 1
        except OSError:
            pass
print(tried, accepted, flush=True)
"""


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[SqliteListener]:
    lst = SqliteListener(str(tmp_path / "queue.db"), f"w-{secrets.token_hex(4)}")
    if lst.address is None:
        pytest.skip("no abstract sockets here")
    yield lst
    lst.close()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_flood_of_datagrams_is_coalesced_into_few_wake_ups(
    listener: SqliteListener, started: list[subprocess.Popen[str]]
) -> None:
    assert listener.address is not None
    flooder = subprocess.Popen(
        [sys.executable, "-c", _FLOOD, listener.address, str(FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True
    )
    started.append(flooder)
    assert flooder.stdout is not None and flooder.stdout.readline().strip() == "ready"
    wake_ups = calls = 0
    start = time.monotonic()
    while flooder.poll() is None:
        calls += 1
        wake_ups += listener.wait(0.05)
    while listener.wait(0.05):  # what the flood left queued
        wake_ups += 1
    elapsed = time.monotonic() - start
    tried, accepted = map(int, flooder.stdout.read().split())
    # Counted, not timed: the listener guarantees WAKE_BURST + elapsed / WAKE_COALESCE_SECONDS;
    # the margin only absorbs rounding. Without coalescing, every wait() during the flood is one.
    bound = 1.2 * (WAKE_BURST + elapsed / WAKE_COALESCE_SECONDS) + 2
    what = f"{wake_ups} wake-ups (bound {bound:.0f}) from {tried} datagrams ({accepted} queued) in {elapsed:.2f} s"
    assert tried > 20 * bound, f"the flood was too small to tell: {what}"
    assert 1 <= wake_ups <= bound, what


def test_after_a_flood_one_datagram_still_wakes_the_listener(listener: SqliteListener) -> None:
    assert listener.address is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for _ in range(5 * WAKE_BURST):  # use up the burst: the next wake-up is rationed
            s.sendto(b"!", "\0" + listener.address[1:])
            assert listener.wait(5.0)
        s.sendto(b"!", "\0" + listener.address[1:])
        assert wait_for(lambda: listener.wait(1.0), 10, "the next wake-up")


def _bound(name: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(name)
    s.setblocking(False)
    return s


def _received(s: socket.socket) -> bytes | None:
    try:
        return s.recv(64)
    except BlockingIOError:
        return None


def test_the_notifier_sends_only_to_addresses_of_jobqs_own_form(listener: SqliteListener, tmp_path: Path) -> None:
    assert listener.address is not None
    tag = secrets.token_hex(4)
    foreign = {
        f"@not-jobq-x-{tag}": _bound(f"\0not-jobq-x-{tag}"),
        str(tmp_path / "some.sock"): _bound(str(tmp_path / "some.sock")),  # e.g. /dev/log
        f"@jobq-{tag}{'a' * 11}": _bound(f"\0jobq-{tag}{'a' * 11}"),  # 19 hex digits
        f"@jobq-{tag.upper()}{'A' * 12}": _bound(f"\0jobq-{tag.upper()}{'A' * 12}"),  # upper case
        f"@jobq-{tag}{'a' * 12}-x": _bound(f"\0jobq-{tag}{'a' * 12}-x"),  # a suffix
    }
    try:
        notifier = WakeNotifier(lambda now: [*foreign, listener.address])  # type: ignore[list-item]
        notifier.notify(time.time())
        # A local datagram is queued before sendto() returns: nothing later can still arrive.
        for address, s in foreign.items():
            assert not is_jobq_address(address)
            assert _received(s) is None, f"a wake-up was sent to {address}"
        assert is_jobq_address(listener.address)
        assert listener.wait(5.0), "the jobq address was woken"
        notifier.close()
    finally:
        for s in foreign.values():
            s.close()
