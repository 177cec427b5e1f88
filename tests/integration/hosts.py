"""Hosts made of Linux namespaces, for multi-host tests that are real.

Each :class:`Host` is a network namespace joined to this test's namespace by a veth pair of its
own (a /30 of 10.x.y.0/24, picked at random among the nets no interface here uses); its processes
run inside ``unshare --uts --pid --fork --mount-proc`` too, so they have the host's name (two
hosts may share one, as two containers of one name do) and a PID namespace of their own.
PostgreSQL is reached at this side's address of each link, which the test server listens on.
A partition is ``ip link set <this side> down``. Everything is removed in ``close``, which the
fixtures call in their finalizers, also when a test fails.

Needs root (creating namespaces is privileged): skipped otherwise, failed under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest

# Run inside the host's new UTS and PID namespaces as their pid 1: name the host, then run the
# command as a child (`; exit $?`: a shell exec'ing its last command would make it pid 1).
HOST_SCRIPT = 'hostname "$0" && "$@"; exit $?'


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"multi-host tests must run in CI: {reason}")
    pytest.skip(f"multi-host tests need namespaces: {reason}")


def check_available() -> None:
    if os.geteuid() != 0:
        unavailable("not root (ip netns and unshare --pid are privileged)")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (iproute2, util-linux)")


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def _used_nets() -> set[str]:
    """The 10.x.y prefixes of every IPv4 address and route seen here, to stay clear of them."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    out += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    return {".".join(word.split(".")[:3]) for word in out.split() if word.startswith("10.")}


@dataclasses.dataclass
class Host:
    """One "machine": a network namespace behind its own veth link."""

    name: str
    """The netns name (unique per test run)."""
    outside: str
    """This side's end of the link (the partition switch)."""
    server_address: str
    """This side's address of the link: where the host reaches PostgreSQL."""
    address: str

    def wrap(self, hostname: str) -> list[str]:
        """A command prefix running a command on this host under ``hostname``."""
        return [
            "ip", "netns", "exec", self.name,
            # --kill-child: when unshare is killed (by its pid), the PID namespace goes with it.
            "unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child",
            "sh", "-c", HOST_SCRIPT, hostname,
        ]  # fmt: skip

    def partition(self) -> None:
        _ip("link", "set", self.outside, "down")

    def heal(self) -> None:
        _ip("link", "set", self.outside, "up")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (from /proc; none once it has exited)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (its children, theirs, ...): what a host's ``wrap`` runs, seen
    from here (their pids in the host's own PID namespace differ)."""
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


class Hosts:
    """Several hosts on one test network; ``close`` removes them."""

    def __init__(self, count: int) -> None:
        check_available()
        self.hosts: list[Host] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        tag = secrets.token_hex(2)
        used = _used_nets()
        for _ in range(100):
            net = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
            if net not in used:
                break
        else:
            unavailable("no free 10.x.y.0/24 for the test network")
        try:
            for i in range(count):
                host = Host(
                    name=f"jobq-{tag}-h{i}",
                    outside=f"jq{tag}o{i}",
                    server_address=f"{net}.{4 * i + 1}",
                    address=f"{net}.{4 * i + 2}",
                )
                inside = f"jq{tag}i{i}"
                _ip("netns", "add", host.name)
                self.hosts.append(host)
                _ip("link", "add", host.outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", host.name)
                _ip("addr", "add", f"{host.server_address}/30", "dev", host.outside)
                _ip("link", "set", host.outside, "up")
                _ip("addr", "add", f"{host.address}/30", "dev", inside, netns=host.name)
                _ip("link", "set", inside, "up", netns=host.name)
                _ip("link", "set", "lo", "up", netns=host.name)
        except BaseException:
            self.close()
            raise

    @property
    def server_addresses(self) -> Sequence[str]:
        return [h.server_address for h in self.hosts]

    @property
    def subnet(self) -> str:
        return ".".join(self.hosts[0].address.split(".")[:3]) + ".0/24"

    def track(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Kill ``proc`` (an ``ip netns exec ... unshare`` started with a host's ``wrap``) on close."""
        self._processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        # unshare ignores SIGTERM with --kill-child; SIGKILL it, and its PID namespace dies with it.
        for proc in self._processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)

    def heal_all(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(RuntimeError):
                host.heal()

    def close(self) -> None:
        self.stop_processes()
        for host in self.hosts:
            # Deleting the namespace deletes its end of the link, and so the pair.
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=30, check=False)
            subprocess.run(["ip", "link", "del", host.outside], capture_output=True, timeout=30, check=False)
        self.hosts = []
