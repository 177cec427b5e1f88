"""Who may see the apps (jobq.web.access): passwords, the login guard, where an app may serve."""

from __future__ import annotations

import logging

import pytest

from jobq.web import access


def test_password() -> None:
    assert access.expected_password({}, None) is None
    assert access.expected_password({}, {"manager_password": "x"}) == "x"
    assert access.expected_password({"JOBQ_MANAGER_PASSWORD": "y"}, {"manager_password": "x"}) == "y"
    assert access.password_ok("y", "y") and not access.password_ok(None, "y")


def test_ops_password_falls_back_to_the_managers() -> None:
    assert access.expected_password({"JOBQ_MANAGER_PASSWORD": "m"}, None, app="ops") == "m"
    assert access.expected_password({"JOBQ_MANAGER_PASSWORD": "m", "JOBQ_OPS_PASSWORD": "o"}, None, app="ops") == "o"
    assert access.expected_password({"JOBQ_OPS_PASSWORD": "o"}, None, app="manager") is None
    assert access.expected_password({}, {"ops_password": "so", "manager_password": "sm"}, app="ops") == "so"
    assert access.password_variables("ops") == ["JOBQ_OPS_PASSWORD", "JOBQ_MANAGER_PASSWORD"]
    assert access.password_variables("manager") == ["JOBQ_MANAGER_PASSWORD"]
    refusal = access.serving_refusal("0.0.0.0", None, "ops") or ""
    assert "Set JOBQ_OPS_PASSWORD or JOBQ_MANAGER_PASSWORD," in refusal


def test_login_guard_doubles_the_delay_caps_it_and_logs_who_not_what(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    guard = access.LoginGuard(first_seconds=1.0, max_seconds=5.0, sleep=slept.append)
    caplog.set_level(logging.WARNING, logger="jobq.web.login")
    for guess in ("hunter1", "hunter2", "hunter3", "hunter4"):
        assert not guard.check(guess, "right", app="manager", who="session abc (client 10.0.0.9)")
    assert slept == [1.0, 2.0, 4.0, 5.0]
    assert guard.check("right", "right", app="manager", who="session abc") and slept == [1.0, 2.0, 4.0, 5.0]
    assert not guard.check("", "right", app="ops", who="session def") and slept[-1] == 1.0  # reset by the right one
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and "session abc (client 10.0.0.9)" in messages[0]
    assert not any("hunter" in m or "right" in m for m in messages), messages


@pytest.mark.parametrize(("address", "password", "serves"), [
    ("127.0.0.1", None, True), ("127.0.0.2", None, True), ("localhost", None, True), ("::1", None, True),
    ("[::1]", None, True), ("unix:///tmp/s.sock", None, True), (None, None, False), ("", "pw", False),
    ("0.0.0.0", None, False), ("0.0.0.0", "pw", True), ("192.0.2.7", None, False), ("::", "pw", True),
])  # fmt: skip
def test_serving_refusal(address: str | None, password: str | None, serves: bool) -> None:
    assert (access.serving_refusal(address, password, "manager") is None) is serves


def test_host_allowed_follows_streamlits_allowed_hosts() -> None:
    for host in ("localhost:8501", "127.0.0.1:8501", "[::1]:8501", "LOCALHOST", "localhost.", None):
        assert access.host_allowed(host, []), host
    for host in ("evil.example:8501", "127.0.0.1.evil.example", "localhost@evil", "", "localhost:99999"):
        assert not access.host_allowed(host, []), host
    assert access.host_allowed("ops.example.com:443", ["*.example.com"])
    assert not access.host_allowed("localhost", ["jobq.internal"])
    assert access.host_allowed("anything", ["*"])
