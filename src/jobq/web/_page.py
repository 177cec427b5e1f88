"""Streamlit glue both apps share: open the queue once per process, show storage errors readably."""

from __future__ import annotations

import streamlit as st

from jobq import JobqError, Queue, Settings, load_settings


@st.cache_resource(show_spinner=False)
def _open_queue(url: str, create: bool) -> Queue:
    # One Queue per process and URL: it is thread-safe and every read is one short transaction,
    # so Streamlit's session threads can share it without holding a reader open.
    return Queue(url, create=create)


def open_queue(*, create: bool = True) -> tuple[Settings, Queue]:
    """Settings (``JOBQ_*`` env, jobq.toml) and the shared Queue; on failure show st.error and stop.

    ``create=False`` (ops, read-only) reports a missing database instead of creating an empty one.
    """
    try:
        settings = load_settings()
        return settings, _open_queue(settings.database_url, create)
    except JobqError as exc:
        st.error(f"**Cannot open the job queue.** {exc}", icon=":material/error:")
        st.caption("Set JOBQ_DATABASE_URL (default sqlite:///data/queue.db) and reload the page.")
        st.stop()
        raise  # unreachable: st.stop() raises; keeps type checkers sure we never return None


def storage_error(exc: JobqError) -> None:
    """A read or action failed (database locked, corrupt, gone): one readable message."""
    st.error(f"**The job queue could not be read.** {exc}", icon=":material/error:")
