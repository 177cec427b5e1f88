"""Who may see the apps: the password that gates each app, the guard that slows down guessing,
and where (on which address, under which host names) an app may serve at all.

Streamlit-free, so every rule is unit-tested; ``_page.gate`` applies them before a page reads
anything of the queue.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from jobq.web import ALLOWED_HOSTS_DEFAULT
from jobq.web.safety import plain

# -- passwords ------------------------------------------------------------------------------------
#: The environment variable (and ``.streamlit/secrets.toml`` key, lower-cased) holding each app's
#: password. Ops falls back to the manager's password when it has none of its own.
PASSWORD_ENV: dict[str, str] = {"manager": "JOBQ_MANAGER_PASSWORD", "ops": "JOBQ_OPS_PASSWORD"}


def password_variables(app: str) -> list[str]:
    """The variables whose password gates ``app``, first one first: ops falls back to the manager's."""
    return [PASSWORD_ENV[name] for name in (["ops", "manager"] if app == "ops" else ["manager"])]


def expected_password(
    env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None, app: str = "manager"
) -> str | None:
    """The password that gates ``app`` (viewing and acting); None: no gate.

    The manager: ``JOBQ_MANAGER_PASSWORD``, else the secret ``manager_password``. Ops: first
    ``JOBQ_OPS_PASSWORD`` / ``ops_password``, then the manager's.
    """
    env = os.environ if env is None else env
    for variable in password_variables(app):
        if env.get(variable):
            return env[variable]
        if secrets is not None:
            value = secrets.get(_secret_key(variable)) or secrets.get(variable)
            if value:
                return str(value)
    return None


def _secret_key(variable: str) -> str:
    """``JOBQ_MANAGER_PASSWORD`` -> ``manager_password`` (the ``.streamlit/secrets.toml`` key)."""
    return variable.removeprefix("JOBQ_").lower()


def password_ok(given: str | None, expected: str) -> bool:
    """Compare in constant time (no timing hints about the password)."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


LOGIN_DELAY_SECONDS_FIRST = 1.0
"""Delay before answering the first wrong password; it doubles with each wrong one in a row."""
LOGIN_DELAY_SECONDS_MAX = 30.0
"""The longest delay before answering a wrong password."""

login_log = logging.getLogger("jobq.web.login")


class LoginGuard:
    """Slows down password guessing for one app process.

    Every wrong password is answered only after a delay that doubles with each wrong guess in a
    row (1, 2, 4, ... up to 30 s). The count is the process's, not the browser session's (a new
    tab does not start again at 1 s), and guesses are checked one at a time, so parallel sessions
    do not multiply the rate either. The price: while someone guesses, a real user waits behind
    them. A right password resets the count. Each wrong guess is logged with who made it (the
    session and client address), never with the text guessed.
    """

    def __init__(
        self,
        first_seconds: float = LOGIN_DELAY_SECONDS_FIRST,
        max_seconds: float = LOGIN_DELAY_SECONDS_MAX,
        sleep: Any = time.sleep,
    ) -> None:
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self._sleep = sleep
        self._lock = threading.Lock()
        self.wrong_in_a_row = 0

    def delay(self, wrong_in_a_row: int) -> float:
        """Seconds to wait before answering the ``wrong_in_a_row``-th wrong guess (1-based)."""
        if wrong_in_a_row < 1:
            return 0.0
        return float(min(self.first_seconds * 2 ** min(wrong_in_a_row - 1, 32), self.max_seconds))

    def check(self, given: str | None, expected: str, *, app: str, who: str) -> bool:
        """Whether ``given`` is the password; a wrong one is logged and answered after the delay."""
        with self._lock:
            if password_ok(given, expected):
                self.wrong_in_a_row = 0
                return True
            self.wrong_in_a_row += 1
            seconds = self.delay(self.wrong_in_a_row)
            login_log.warning(
                "%s: wrong password from %s (%d wrong in a row); answering after %.0f s",
                app,
                plain(who),
                self.wrong_in_a_row,
                seconds,
            )
            self._sleep(seconds)
            return False

    def reset(self) -> None:
        """Forget the wrong guesses (for tests)."""
        with self._lock:
            self.wrong_in_a_row = 0


LOGIN_GUARD = LoginGuard()
"""The process's guard (each app runs in its own Streamlit process)."""


# -- where the apps may serve --------------------------------------------------------------------
def is_loopback(address: str | None) -> bool:
    """Whether a server address (Streamlit's ``server.address``) is reachable from this host only."""
    if not address:
        return False  # unset: Streamlit listens on every interface
    if address.startswith("unix://") or address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def serving_refusal(address: str | None, password: str | None, app: str) -> str | None:
    """Why ``app`` must not show anything when Streamlit listens on ``address``; None: serve.

    Loopback (or a unix socket) serves. Any other address (unset: every interface) serves only
    when it was given explicitly and a password gates the app.
    """
    if is_loopback(address):
        return None
    if address and password:
        return None
    variables = " or ".join(password_variables(app))
    if not address:
        return (
            f"The jobq {app} refuses to serve: server.address is not set, so Streamlit listens on every "
            f"network interface. Start it with --server.address 127.0.0.1 (as jobq {app} and "
            f"supervisord.conf do), or expose it deliberately: an explicit --server.address and a "
            f"password ({variables})."
        )
    return (
        f"The jobq {app} refuses to serve: it listens on {address} without a password. Set "
        f"{variables}, or serve it on loopback (--server.address 127.0.0.1)."
    )


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether an HTTP ``Host`` header names an allowed host, as Streamlit's ``server.allowedHosts``
    judges it (port ignored, ``*.example.com`` wildcards, ``*`` for any). No header (no HTTP
    request at all, as in AppTest) passes; an empty ``allowed`` means
    ``ALLOWED_HOSTS_DEFAULT`` (the loopback names: under any other name, e.g. a DNS-rebinding
    attacker's resolved to 127.0.0.1, a page gets no session).
    """
    if host is None:
        return True
    try:
        parsed = urllib.parse.urlsplit(f"//{host}")
        name = parsed.hostname
        _ = parsed.port  # a malformed port raises ValueError
    except ValueError:
        return False
    if not name or parsed.username is not None or parsed.path or parsed.query or parsed.fragment:
        return False
    name = name.lower().rstrip(".")
    for pattern in (p.strip().lower().rstrip(".") for p in (allowed or ALLOWED_HOSTS_DEFAULT)):
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False
