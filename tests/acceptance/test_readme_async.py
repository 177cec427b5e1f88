"""The README's asyncio example runs as written: its FastAPI app (through FastAPI's TestClient)
enqueues in the request's transaction and waits for the result an async handler returns."""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
from pathlib import Path

import pytest

import jobq
from jobq.worker import REGISTRY, Worker

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.postgres


def _example() -> str:
    text = README.read_text()
    found = re.search(r"<!-- tested by tests/acceptance/test_readme_async.py[^\n]*\n```python\n(.*?)```", text, re.S)
    assert found, "the README's asyncio example (marked for this test) is missing"
    return found.group(1)


def test_the_readme_fastapi_example_runs_as_written(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    (tmp_path / "app.py").write_text(_example())
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setattr(jobq.worker.registry, "REGISTRY", dict(REGISTRY))  # the example's @task stays here
    spec = importlib.util.spec_from_file_location("readme_app", tmp_path / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_app", module)
    spec.loader.exec_module(module)
    handlers = {"thumbnail": module.thumbnail}

    with jobq.Queue(postgres_url) as q:
        worker = Worker(q, handlers)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            assert worker.started.wait(30)
            with TestClient(module.app) as client:
                response = client.post("/images/cat.png")
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["status"] == "COMPLETED" and body["result"] == {"thumbnail": "cat.small.png"}
                # The row and the job committed together; a second upload of the same name fails in
                # its transaction, and its job was never stored.
                with pytest.raises(Exception, match="duplicate key"):
                    client.post("/images/cat.png")
            assert q.counts()["COMPLETED"] == 1 and sum(q.counts().values()) == 1
        finally:
            worker.stop()
            thread.join(30)
