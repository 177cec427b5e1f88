"""The web apps' hardening, checked in Debian's Chromium over real HTTP.

The manager is started as the seed starts it (``streamlit run src/manager/manager.py``) but from a
directory without a ``.streamlit/``, and ops as ``jobq ops`` starts it (``jobq.web.streamlit_command``);
both on one database holding hostile text (tests/web/seeding.py: ``seed_hostile``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JOB_TABLE,
    UI_TIMEOUT_MS,
    free_port,
    job_rows,
    need_chromium,
    poll,
    select_jobs,
    serve,
    wait_rows,
)
from seeding import BIDI_NAME, BIDI_NAME_SHOWN, MANAGER, OTHER_HOST, seed, seed_hostile

from jobq import JobStatus
from jobq.web import ops_model, safety, streamlit_command, views

pytestmark = pytest.mark.slow

REBOUND_HOST = "evil.example"
"""A name an attacker's DNS answers with 127.0.0.1 (here: Chromium's host resolver rule)."""

# Every element that makes the browser fetch something or leave the page, pointing elsewhere.
FOREIGN_ELEMENTS_JS = """() => {
    const found = [];
    for (const el of document.querySelectorAll("a[href], img[src], link[href], script[src], iframe[src], image")) {
        const raw = el.getAttribute("href") || el.getAttribute("src") || el.getAttribute("xlink:href") || "";
        const url = new URL(raw, location.href);
        if (!["data:", "blob:", "javascript:"].includes(url.protocol) && url.origin !== location.origin) {
            found.push(el.outerHTML.slice(0, 300));
        }
    }
    return found;
}"""


def seed_command(port: int) -> list[str]:
    """The seed's own command line for the manager (headless, so it never waits for a first-run prompt)."""
    return [sys.executable, "-m", "streamlit", "run", str(MANAGER), "--server.port", str(port),
            "--server.headless", "true"]  # fmt: skip


@dataclasses.dataclass
class Apps:
    url: str
    manager: int
    ops: int
    ids: dict[JobStatus, list[int]]
    hostile: dict[str, int]
    logs: Path
    """The folder of manager.log and ops.log (the servers' output)."""


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Apps]:
    need_chromium()
    tmp = tmp_path_factory.mktemp("apps")
    url = f"sqlite:///{tmp}/queue.db"
    ids = seed(url)
    hostile_ids = seed_hostile(url)
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_OPERATOR": "browser-test", "PYTHONUNBUFFERED": "1"}
    for variable in ("JOBQ_MANAGER_PASSWORD", "JOBQ_OPS_PASSWORD"):
        env.pop(variable, None)
    manager, ops = free_port(), free_port()
    serve(request, seed_command(manager), cwd=tmp, env=env, port=manager, log_path=tmp / "manager.log")
    serve(request, streamlit_command("ops", ops), cwd=tmp, env=env, port=ops, log_path=tmp / "ops.log")
    yield Apps(url, manager, ops, ids, hostile_ids, tmp)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND_HOST} 127.0.0.1"]
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any) -> Any:
    page = browser.new_page(viewport={"width": 1600, "height": 2000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def test_a_rebound_host_name_gets_no_session(apps: Apps, chromium: Any) -> None:
    """DNS rebinding: the page loads under evil.example, but its websocket is refused: no data, no button."""
    from playwright.sync_api import expect

    for port, log, ready in (
        (apps.manager, apps.logs / "manager.log", JOB_TABLE),
        (apps.ops, apps.logs / "ops.log", ".jobq-metric"),
    ):
        page = new_page(chromium)
        try:
            page.goto(f"http://{REBOUND_HOST}:{port}/")
            refusal = (
                f"Rejecting WebSocket connection with disallowed Origin or Host header: origin=http://{REBOUND_HOST}"
            )

            def refused_twice(log: Path = log, refusal: str = refusal) -> bool:
                return log.read_text().count(refusal) >= 2  # the page tried, and tried again

            poll(refused_twice, f"the server to refuse the websocket under {REBOUND_HOST}")
            assert page.locator(ready).count() == 0
            assert page.locator('[data-testid="stButton"], .jobq-metric, .stText').count() == 0
            assert "jobq" not in page.locator("body").inner_text()
            for name in ("127.0.0.1", "localhost"):  # the loopback names work
                page.goto(f"http://{name}:{port}/")
                expect(page.locator(ready).first).to_be_visible()
        finally:
            page.close()


def test_hostile_text_is_shown_as_plain_text(apps: Apps, chromium: Any) -> None:
    """No link or image to another host, no KaTeX, no bidi override, in the manager (rows and a job's
    detail with its errors) and in ops (alerts, tables)."""
    from playwright.sync_api import expect

    failed = apps.hostile["failed"]
    page = new_page(chromium)
    try:
        page.goto(f"http://127.0.0.1:{apps.manager}/")
        wait_rows(page, lambda rows: set(apps.hostile.values()) <= set(rows), "the hostile jobs in the list")
        payload_row = " ".join(job_rows(page)[apps.hostile["payload"]])
        assert '"note":"n invoice\\u202etxt.exe' in payload_row  # JSON: the override as an escape
        select_jobs(page, failed)
        page.locator(".st-key-open_selected button").first.click()
        detail = page.locator(".st-key-job_detail")
        expect(detail).to_be_visible()
        expect(detail.locator('[data-testid="stExpander"]')).to_have_count(2)  # the last error and the earlier one
        for summary in detail.locator('[data-testid="stExpander"] summary').all():
            if summary.get_attribute("aria-expanded") != "true":
                summary.click()
        expect(detail).to_contain_text("huge E1")  # the earlier error's text, shown
        check_page(page, expect_name=True)

        page.goto(f"http://127.0.0.1:{apps.ops}/")
        expect(page.get_by_text("Lost worker").first).to_be_visible()
        check_page(page, expect_name=True)
    finally:
        page.close()


def check_page(page: Any, *, expect_name: bool) -> None:
    foreign = page.evaluate(FOREIGN_ELEMENTS_JS)
    assert foreign == [], foreign
    assert page.locator(".katex, .katex-display, math").count() == 0
    text = page.locator("body").inner_text().replace(safety.WORD_JOINER, "")
    assert BIDI_NAME not in text and "\u202e" not in page.content()
    if expect_name:
        assert BIDI_NAME_SHOWN in text
        assert f"[click](http://{OTHER_HOST}/" in text  # the link's text, shown as typed


def test_pages_fetch_nothing_from_another_host(apps: Apps, chromium: Any) -> None:
    """The apps work with no outside network: every request goes to the app's own host (fonts and
    the page icon included)."""
    from playwright.sync_api import expect

    for port, ready in ((apps.manager, "jobq manager"), (apps.ops, "jobq ops")):
        context = chromium.new_context(viewport={"width": 1600, "height": 2000})
        try:
            requests: list[str] = []
            context.on("request", lambda r, requests=requests: requests.append(r.url))
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text(ready).first).to_be_visible()
            expect(page.locator('[data-testid="stSidebar"] [data-testid="stCaptionContainer"]').first).to_be_visible()
            page.wait_for_load_state("networkidle")
            foreign = [u for u in requests if not u.startswith(("data:", "blob:")) and _origin(u) != _origin(page.url)]
            assert requests and foreign == [], foreign
            icon = page.evaluate("() => document.querySelector(\"link[rel='shortcut icon']\")?.href || ''")
            assert icon.startswith("data:") or _origin(icon) == _origin(page.url), icon
        finally:
            context.close()


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_captions_name_the_database_as_the_redacting_function_does(apps: Apps, chromium: Any) -> None:
    """The captions show ``views.database_line`` / ``ops_model.ops_caption`` (which mask a password;
    tests/web/test_views.py checks that with a postgresql:// URL)."""
    from playwright.sync_api import expect

    page = new_page(chromium)
    try:
        page.goto(f"http://127.0.0.1:{apps.manager}/")
        sidebar = page.locator('[data-testid="stSidebar"] [data-testid="stCaptionContainer"]')
        expect(sidebar.filter(has_text="database")).to_have_text(views.database_line(apps.url))
        page.goto(f"http://127.0.0.1:{apps.ops}/")
        caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').filter(has_text="database")
        expect(caption.first).to_contain_text(f" · {ops_model.ops_caption(apps.url)}")
    finally:
        page.close()


def test_an_error_shows_no_traceback_in_the_browser(
    tmp_path: Path, request: pytest.FixtureRequest, chromium: Any
) -> None:
    """An unexpected error in the app (a bug: injected at start-up through ``sitecustomize``, as
    hand-edited rows no longer raise anywhere) reaches the browser as a generic message only: no
    traceback, no server path (those go to the log)."""
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path}/queue.db"
    seed(url)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import jobq.backends.common\n"
        "def _broken(stored):\n"
        "    raise TypeError('a bug, injected by the test')\n"
        "jobq.backends.common.decode_json = _broken  # where job_from_row looks it up\n"
    )
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(hooks)}
    for variable in ("JOBQ_MANAGER_PASSWORD", "JOBQ_OPS_PASSWORD"):
        env.pop(variable, None)
    port = free_port()
    log = tmp_path / "manager.log"
    serve(request, seed_command(port), cwd=tmp_path, env=env, port=port, log_path=log)
    page = new_page(chromium)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        error = page.locator('[data-testid="stException"], [data-testid="stAlert"]').first
        expect(error).to_be_visible()
        text = page.locator("body").inner_text()
        for leak in ("Traceback", 'File "', str(Path(views.__file__).parent), "site-packages", "TypeError"):
            assert leak not in text, (leak, text)
        poll(lambda: "TypeError" in log.read_text(), "the error's details in the server log")
    finally:
        page.close()
