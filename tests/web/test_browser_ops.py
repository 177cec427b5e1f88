"""The ops page in Chromium at 1366 px (light) and 1920 px (dark): no header, badge, metric or
button is cut (each element's scrollWidth fits its clientWidth); jobs link to the manager, whose
page opens the job; the badges are drawn in the colours tests/web/test_contrast.py checks; no
request leaves for another host."""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    cut_elements,
    free_port,
    need_chromium,
    serve,
    wide_charts,
    wide_tables,
)
from seeding import MANAGER, OPS, OPS_VIEWS, REPO, KeepAlive, seed_demo

from jobq import JobStatus
from jobq.web import views

pytestmark = pytest.mark.slow

BADGE_COLORS_JS = """() => Array.from(document.querySelectorAll('span[class*="badge" i]')).map(el => {
  const cs = getComputedStyle(el);
  return [el.innerText.trim().split(/\\s+/).pop(), cs.color, cs.backgroundColor];
})"""


#: The open tab's panel (the others are kept, empty and inert).
OPEN_TAB = '[data-testid="stTabPanel"]:not([data-st-inactive])'
#: The tabs that draw a data grid with the demo's jobs and workers.
GRID_VIEWS = ("Workers", "Running jobs", "Latest jobs", "Activity")


def _rgb(color: str) -> str:
    return "rgb({}, {}, {})".format(*(int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)))


def test_ops_fits_links_jobs_and_draws_the_tested_colours(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    url = f"sqlite:///{tmp_path}/queue.db"
    ids = seed_demo(url, minutes=20)
    alive = KeepAlive(url, ["consumer1-new", "consumer2-a"])
    request.addfinalizer(alive.stop)
    (tmp_path / ".streamlit").mkdir()
    shutil.copy(REPO / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")
    manager_port, ops_port = free_port(), free_port()
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_OPERATOR": "browser-test", "PYTHONUNBUFFERED": "1",
           "JOBQ_MANAGER_URL": f"http://127.0.0.1:{manager_port}/"}  # fmt: skip
    for name in ("JOBQ_MANAGER_PASSWORD", "JOBQ_OPS_PASSWORD"):
        env.pop(name, None)
    for app, port in ((MANAGER, manager_port), (OPS, ops_port)):
        command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                   "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats",
                   "false", "--server.fileWatcherType", "none"]  # fmt: skip
        serve(request, command, cwd=tmp_path, env=env, port=port, log_path=tmp_path / f"{app.stem}.log")

    expect.set_options(timeout=UI_TIMEOUT_MS)
    requests: list[str] = []
    links: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width, scheme in ((1366, "light"), (1920, "dark")):
                context = browser.new_context(viewport={"width": width, "height": 2400}, color_scheme=scheme)
                context.on("request", lambda r: requests.append(r.url))
                page = context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                page.goto(f"http://127.0.0.1:{ops_port}/")
                expect(page.get_by_text("jobq ops")).to_be_visible()
                expect(page.get_by_text("All clear")).to_be_visible()  # the seeded workers are alive
                expect(page.get_by_text("Due jobs", exact=False).first).to_be_visible()
                # The first screen's table: the queues, plain HTML (no data grid on the first screen).
                expect(page.locator(".st-key-queue_health table tr").nth(1)).to_be_visible()
                page.wait_for_timeout(1500)  # charts and tables settle
                background = page.evaluate("() => getComputedStyle(document.querySelector('.stApp')).backgroundColor")
                assert background == _rgb(views.STATUS_PALETTES[scheme]["page"][1]), (scheme, background)
                assert wide_charts(page) == [], (width, scheme)  # no chart past its column
                for view in OPS_VIEWS:
                    # A tab is drawn when it is opened (lazy tabs), and the URL names it (a link opens it).
                    page.get_by_role("tab", name=view, exact=True).click()
                    expect(page.get_by_role("tab", name=view, exact=True)).to_have_attribute("aria-selected", "true")
                    if view != OPS_VIEWS[0]:  # the default tab is not written into the URL
                        spelled = view.replace(" ", "(%20|[+])")  # the names are words and spaces
                        expect(page).to_have_url(re.compile(rf"[?&]view={spelled}(&|$)"))
                    if view in GRID_VIEWS:
                        expect(page.locator(f"{OPEN_TAB} [data-testid='stDataFrame']").first).to_be_visible()
                    page.wait_for_timeout(500)  # the tab's table settles
                    found = cut_elements(page)
                    assert found["checked"] > 20 and found["cut"] == [], (width, scheme, view, found)
                    assert wide_tables(page) == [], (width, scheme, view)  # no table scrolls sideways
                    # Tables are drawn on a canvas; their accessible copy holds the text of the cells drawn.
                    cells = page.locator(f"{OPEN_TAB} [data-testid='stDataFrame'] td").all_inner_texts()
                    links += [c for c in cells if c.startswith(f"http://127.0.0.1:{manager_port}/?job=")]
                    assert not [c for c in cells if c.startswith("jobq show ")]  # the manager URL is known
                # A link with a tab in it opens that tab.
                page.goto(f"http://127.0.0.1:{ops_port}/?view=Activity")
                expect(page.get_by_role("tab", name="Activity", exact=True)).to_have_attribute("aria-selected", "true")
                expect(page.locator(f"{OPEN_TAB} [data-testid='stDataFrame']").first).to_be_visible()
                context.close()

            # A link opens the job in the manager; its badges are the tested colours, in both themes.
            assert links, "no job link in the ops tables"
            link = links[0]
            job_id = int(link.rsplit("=", 1)[1])
            assert any(job_id in found for found in ids.values())
            for scheme in ("light", "dark"):
                context = browser.new_context(viewport={"width": 1366, "height": 1400}, color_scheme=scheme)
                context.on("request", lambda r: requests.append(r.url))
                page = context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                page.goto(link)
                detail = page.locator(".st-key-job_detail")
                expect(detail).to_contain_text(f"Job {job_id}")
                badges = page.evaluate(BADGE_COLORS_JS)
                palette = views.STATUS_PALETTES[scheme]
                seen = set()
                for word, color, background in badges:
                    if word in JobStatus.__members__:
                        name = views.STATUS_COLORS[JobStatus(word)]
                        assert (color, background) == tuple(_rgb(c) for c in palette[name]), (scheme, word)
                        seen.add(word)
                assert seen == set(JobStatus.__members__), seen  # the counts line shows every status
                context.close()
        finally:
            browser.close()
    hosts = {urllib.parse.urlsplit(u).netloc for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts <= {f"127.0.0.1:{ops_port}", f"127.0.0.1:{manager_port}"}, hosts
    assert not [u for u in requests if re.search(r"fonts\.g|googleapis|gstatic", u)]
