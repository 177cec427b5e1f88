"""Streamlit glue both apps share: the gate every page passes first, the queue opened once per
process, and storage errors shown readably.

The gate (:func:`gate`) runs before anything reads the queue. It refuses to serve when Streamlit
listens beyond loopback without a password (``streamlit run src/manager/manager.py`` started
outside the repo root does not read its ``.streamlit/config.toml``), refuses a page reached under
a host name the app does not answer to (DNS rebinding; Streamlit's ``server.allowedHosts``
already refuses such a session where the config applies), and with a password shows nothing but
the login form until it is entered.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, ParamSpec, cast

import streamlit as st
from streamlit import config as st_config
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from jobq import JobqError, Queue, Settings, load_settings
from jobq.redact import redact_text
from jobq.web import SHOW_ERROR_DETAILS, access, health, safety, views

P = ParamSpec("P")

_log = logging.getLogger("jobq.web")
if not _log.handlers:  # Streamlit configures only its own loggers: give ours a line format
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _log.addHandler(_handler)
    _log.setLevel(logging.INFO)


def secrets() -> dict[str, Any] | None:
    """``st.secrets`` as a dict, or None without a (readable) ``.streamlit/secrets.toml``."""
    try:
        return dict(st.secrets)
    except Exception:  # noqa: BLE001 - no secrets.toml (or a malformed one) simply means no secret password
        return None


def _fingerprint(password: str) -> str:
    # What the session remembers once unlocked: changing the password locks every open session.
    return hashlib.sha256(b"jobq-web-login\0" + password.encode()).hexdigest()


def unlocked(app: str) -> bool:
    """Whether this session may see and act: no password is set, or it was entered here."""
    expected = access.expected_password(secrets=secrets(), app=app)
    if expected is None:
        return True
    remembered = st.session_state.get(f"unlocked_{app}")
    return isinstance(remembered, str) and hmac.compare_digest(remembered, _fingerprint(expected))


def lock(app: str) -> None:
    """Forget this session's login (the sidebar's Lock button)."""
    st.session_state.pop(f"unlocked_{app}", None)


def _who() -> str:
    ctx = get_script_run_ctx()
    session = ctx.session_id[:8] if ctx is not None else "unknown"
    address = st.context.ip_address
    return f"session {session} (client {address if isinstance(address, str) else 'unknown'})"


def _try_login(app: str) -> None:
    given = st.session_state.get("login_password") or ""
    st.session_state["login_password"] = ""  # the guess is not kept in the session
    expected = access.expected_password(secrets=secrets(), app=app)
    if expected is None:
        return
    if access.LOGIN_GUARD.check(given, expected, app=app, who=_who()):
        st.session_state[f"unlocked_{app}"] = _fingerprint(expected)
        st.session_state.pop("login_failed", None)
    else:
        st.session_state["login_failed"] = True


def gate(app: str, title: str) -> None:
    """Run first on every page: return only when this session may see the queue, else st.stop().

    ``app`` is ``"manager"`` or ``"ops"`` (its password: ``access.expected_password``).
    """
    # Also set here, not only in the config files and command lines: a page started some other
    # way (another working directory, no flags) must not send tracebacks to the browser either;
    # an uncaught error shows a generic message, the details go to the server's log.
    st.set_option("client.showErrorDetails", SHOW_ERROR_DETAILS)
    password = access.expected_password(secrets=secrets(), app=app)
    refusal = access.serving_refusal(st_config.get_option("server.address"), password, app)
    if refusal is not None:
        st.title(title)
        st.error(safety.md_literal(refusal, safety.SHOWN_MESSAGE_CHARS))
        st.stop()
    if not access.host_allowed(st.context.headers.get("Host"), st_config.get_option("server.allowedHosts")):
        st.title(title)
        st.error(
            "This page was reached under a host name the app does not answer to. Open it as "
            "http://localhost:PORT/ (or add the name to server.allowedHosts)."
        )
        st.stop()
    if password is None or unlocked(app):
        return
    st.title(title)
    where = ", else ".join(access.password_variables(app))
    st.caption(f"Locked: enter the {app} password (set by {where}) to see the queue.")
    with st.form("login"):
        st.text_input(f"{app.title()} password", type="password", key="login_password")
        st.form_submit_button("Unlock", type="primary", on_click=_try_login, args=(app,))
    if st.session_state.get("login_failed"):
        st.error("Wrong password.")
    st.stop()


def lock_button(app: str) -> None:
    """In the sidebar, when a password gates ``app``: a button that locks this session again."""
    if access.expected_password(secrets=secrets(), app=app) is not None:
        st.sidebar.button("Lock", key="lock", on_click=lock, args=(app,), help="Ask for the password again.")


@st.cache_resource(show_spinner=False)
def _open_queue(url: str, create: bool) -> health.WatchedQueue:
    # One Queue per process and URL: it is thread-safe and every read is one short transaction,
    # so Streamlit's session threads can share it without holding a reader open. Watched: a
    # locked database fails fast, a database that is down shows the last figures, a replaced
    # file is reopened (jobq.web.health).
    return health.WatchedQueue(url, create=create)


def open_queue(*, create: bool = True) -> tuple[Settings, Queue]:
    """Settings (``JOBQ_*`` env, jobq.toml) and the shared Queue; on failure show st.error and stop.

    ``create=False`` (ops, read-only) reports a missing database instead of creating an empty one.
    """
    url = ""
    try:
        settings = load_settings()
        url = settings.database_url
        # Typed as the Queue it forwards to: the pages use the Queue API and nothing else.
        return settings, cast(Queue, _open_queue(url, create))
    except JobqError as exc:
        message = redact_text(str(exc), url) if url else str(exc)
        st.error("**Cannot open the job queue.** " + safety.md_literal(message, safety.SHOWN_MESSAGE_CHARS))
        st.caption(
            f"Trying again every {OPEN_RETRY_SECONDS:g} s: the page opens the queue by itself once it "
            "exists (the apps may start before the first producer makes it). Else set "
            "JOBQ_DATABASE_URL (default sqlite:///data/queue.db)."
        )
        if url:
            _retry_open(url, create)
        st.stop()
        raise  # unreachable: st.stop() raises; keeps type checkers sure we never return None


#: How often a page that could not open the queue tries again (a fragment: the page is not redrawn).
OPEN_RETRY_SECONDS = 3.0


@st.fragment(run_every=OPEN_RETRY_SECONDS)
def _retry_open(url: str, create: bool) -> None:
    """Opens the queue again; once it opens, the whole page is drawn (it needed a reload: an app
    opened between the database's creation and its schema said "no jobq queue" for good)."""
    try:
        _open_queue(url, create)
    except JobqError:
        return
    st.rerun(scope="app")


def storage_error(exc: JobqError, q: Queue) -> None:
    """A read or action failed (database locked, corrupt, gone): one readable message."""
    message = redact_text(str(exc), q.url)
    st.error("**The job queue could not be read.** " + safety.md_literal(message, safety.SHOWN_MESSAGE_CHARS))


def theme_type() -> str:
    """``"light"`` or ``"dark"``: the theme this session's browser shows (it follows the browser's
    preference or the app menu), for colours drawn outside the theme (status cells in tables)."""
    kind = st.context.theme.type
    return kind if kind in ("light", "dark") else "light"


def health_banner(q: Queue) -> None:
    """Say when the figures are stale (the database cannot be read) or the file was replaced."""
    if not isinstance(q, health.WatchedQueue):
        return
    status = q.status()
    if status.replaced_at is not None:
        st.info(
            f"The database file was replaced at {time.strftime('%H:%M:%S', time.localtime(status.replaced_at))} "
            f"({views.zone_name(status.replaced_at)}): the app opened the new file; what it shows is the new file's.",
            icon=":material/sync_problem:",
        )
    if status.stale_since is not None:
        since = time.strftime("%H:%M:%S", time.localtime(status.stale_since))
        st.warning(
            f"**Stale since {since} ({views.zone_name(status.stale_since)})**: "
            + safety.md_literal(status.reason, safety.SHOWN_MESSAGE_CHARS)
            + ". Showing the last known figures; the page keeps trying and recovers by itself.",
            icon=":material/cloud_off:",
        )


def watched(body: Callable[P, None]) -> Callable[P, None]:
    """``body`` (a fragment whose first argument is the Queue) with the health banner above it,
    drawn after the body's reads so that it tells how they went."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        slot = st.container()
        body(*args, **kwargs)
        with slot:
            health_banner(cast(Queue, args[0]))

    return run
