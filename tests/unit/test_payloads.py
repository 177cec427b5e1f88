"""The enqueue path's payload checks: one walk (size bound and depth) before one serialisation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobq import queue as queue_module
from jobq.errors import InvalidPayload
from jobq.payloads import JSON_DEPTH_LIMIT, encode_json, encode_walked, walk


def _reference_walk(value: Any, limit: int) -> int:
    """The walk as first written (every item pushed on the stack): the fast one must agree."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, dict | list | tuple):
            if depth >= JSON_DEPTH_LIMIT:
                raise InvalidPayload("too deep")
            total += 2 + len(item)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        else:
            total += 1
    return total


VALUES = [
    {"n": 1, "t": 0.5, "path": "data/files/a.txt", "ok": True, "none": None},
    [1, "two", [3.0, {"four": [b"5"]}], (6, 7)],
    {"nested": {"deeper": {"list": ["é", "x" * 300]}}},
    "plain",
    42,
    [],
]


@pytest.mark.parametrize("value", VALUES)
def test_the_walk_counts_what_the_reference_walk_counts(value: Any) -> None:
    for limit in (1, 20, 1 << 20):
        assert (walk(value, limit) > limit) == (_reference_walk(value, limit) > limit)
    assert walk(value, 1 << 20) == _reference_walk(value, 1 << 20)


def test_depth_is_refused_by_the_walk_and_the_encoder_matches_json() -> None:
    deep: Any = "leaf"
    for _ in range(JSON_DEPTH_LIMIT + 1):
        deep = {"k": deep}
    with pytest.raises(InvalidPayload, match="deeper than"):
        walk(deep, 1 << 20)
    with pytest.raises(InvalidPayload, match="deeper than"):
        encode_json(deep)
    value = VALUES[2]
    assert encode_walked(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(InvalidPayload, match="not JSON-serialisable"):
        encode_walked({"nan": float("nan")})
    with pytest.raises(InvalidPayload, match="not valid Unicode"):
        encode_walked({"bad": "\udcff"})


def test_a_checked_name_is_remembered_and_a_bad_one_never_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "_CHECKED_NAMES", set())
    assert queue_module._check_name("mail", "queue name") == "mail"
    assert sorted(queue_module._CHECKED_NAMES) == ["mail"]
    queue_module._check_name("a-key", "idempotency key", remember=False)
    assert sorted(queue_module._CHECKED_NAMES) == ["mail"]
    for bad in ("tab\there", "x" * (queue_module.NAME_MAX_CHARS + 1), "\udcff", 7):
        with pytest.raises(InvalidPayload, match="printable characters"):
            queue_module._check_name(bad, "queue name")  # type: ignore[arg-type]
    assert sorted(queue_module._CHECKED_NAMES) == ["mail"]
    monkeypatch.setattr(queue_module, "CHECKED_NAMES_MAX", 1)
    queue_module._check_name("other", "queue name")
    assert sorted(queue_module._CHECKED_NAMES) == ["mail"]  # full: checked every time, not remembered
