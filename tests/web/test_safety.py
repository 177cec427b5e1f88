"""Untrusted text made safe to show in the apps (jobq.web.safety)."""

from __future__ import annotations

import re

from jobq.web import safety


def test_plain_removes_bidi_format_and_control_characters_and_cuts() -> None:
    assert safety.plain("invoice\u202etxt.exe") == "invoicetxt.exe"
    assert safety.plain("a\u200bb\u2066c\u2069\ufeffd\x00e\x1b[0m") == "abcde[0m"
    assert safety.plain("one\r\ntwo\u2028three\tfour") == "one two three four"
    assert safety.plain("one\r\ntwo\tx", multiline=True) == "one\ntwo\tx"
    cut = safety.plain("x" * 1000)
    assert len(cut) == safety.SHOWN_LINE_CHARS and cut.endswith(safety.ELLIPSIS)
    assert safety.plain("\u202e" * 10_000 + "tail", limit=10) == ""  # padding cannot push work past the limit


def test_md_literal_leaves_nothing_markdown_can_act_on() -> None:
    hostile = "[a](http://other.host/x) ![i](http://other.host/i.png) $$\\huge X$$ :red[y] www.other.host <b>"
    escaped = safety.md_literal(hostile)
    # every ASCII punctuation character is escaped, so no link, image, math, directive or autolink
    assert re.fullmatch(r"(?:\\[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~])*", escaped), escaped
    assert re.sub(r"\\(.)", r"\1", escaped).replace(safety.WORD_JOINER, "") == hostile
    # GFM autolinks need a space or punctuation before http/www and a letter after @: a word joiner is neither
    joined = safety.md_literal("see http://a.b www.c.d e@f.g")
    assert joined == "see \u2060http\\:\\/\\/a\\.b \u2060www\\.c\\.d e\\@\u2060f\\.g"
    assert "\u202e" not in safety.md_literal("a\u202eb")


def test_shown_json_writes_invisible_characters_as_escapes() -> None:
    text = safety.shown_json({"path": "invoice\u202etxt.exe", "n": "a\u2028b\U000e0001"})
    assert "\u202e" not in text and "\\u202e" in text and "\\u2028" in text and "\\udb40\\udc01" in text
