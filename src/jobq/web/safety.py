"""Untrusted text made safe to show in the apps.

Paths, payloads, errors, queue/task names, worker and operator names come from whoever enqueued
a job, ran a worker or typed a name. Streamlit renders most text as Markdown (links, images that
fetch from any host, KaTeX, colour directives), and Unicode bidi controls reorder what is shown
(``invoice\\u202etxt.exe`` reads as ``invoiceexe.txt``). Every such value goes through :func:`plain`
(then a non-Markdown element: st.text, st.code, a dataframe cell) or :func:`md_literal` (where the
surrounding element is Markdown: alerts, captions, labels); JSON goes through :func:`shown_json`.

The CLI has its own cleaner for terminals (``jobq.cli.output.clean``: invisible characters become
spaces, an ASCII ``...`` marks a cut), pinned by its tests and output formats.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

SHOWN_LINE_CHARS = 200
"""Longest one-line untrusted value shown (a path, a queue/task/worker name, an error's last line)."""
SHOWN_MESSAGE_CHARS = 1_000
"""Longest message shown in an alert or toast (it may quote untrusted values)."""
SHOWN_BLOCK_CHARS = 20_000
"""Longest multi-line untrusted value shown in a code block (a traceback, a payload's JSON)."""
ELLIPSIS = "\u2026"
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})  # control, format (bidi, zero-width), surrogate
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def _visible(ch: str) -> bool:
    return ch not in _LINE_BREAKS and unicodedata.category(ch) not in _HIDDEN_CATEGORIES


def plain(value: object, limit: int = SHOWN_LINE_CHARS, *, multiline: bool = False) -> str:
    r"""Untrusted text made safe to show as plain text: no control/format characters, cut to ``limit``.

    Removes Unicode format characters (category Cf: bidi overrides and isolates, zero-width
    characters), control characters and lone surrogates. Line breaks (and tabs) are kept when
    ``multiline``, else they become spaces. Text longer than ``limit`` ends with an ellipsis.

    >>> plain("invoice\u202etxt.exe")
    'invoicetxt.exe'
    >>> plain("a\nb" + "c" * 10, limit=5)
    'a bc…'
    """
    text = value if isinstance(value, str) else str(value)
    # Cut generously first, so a huge value costs little; the final cut comes after cleaning.
    text = text[: limit * 4 + 16].replace("\r\n", "\n")
    out: list[str] = []
    for ch in text:
        if ch in _LINE_BREAKS:
            out.append("\n" if multiline else " ")
        elif ch == "\t":
            out.append("\t" if multiline else " ")
        elif _visible(ch):
            out.append(ch)
    return _cut("".join(out), limit)


WORD_JOINER = "\u2060"
_AUTOLINK_START = re.compile(r"(?i)(?=https?:|www\.)")


def md_literal(value: object, limit: int = SHOWN_LINE_CHARS) -> str:
    r"""Untrusted text for a Markdown element: :func:`plain` on one line, nothing Markdown acts on.

    Every ASCII punctuation character is backslash-escaped, so nothing in it starts a link, an
    image, emphasis, code, a colour directive or LaTeX. GFM's autolinks (``http://...``,
    ``www....``, ``name@host.tld``) are found in the text after escapes are undone, so an
    invisible word joiner (U+2060) goes before ``http``/``www`` and after ``@``: an autolink
    must start after a space or punctuation, and its domain with a letter or digit.

    >>> md_literal("![x](http://h/i.png) $$\\huge$$")
    '\\!\\[x\\]\\(\u2060http\\:\\/\\/h\\/i\\.png\\) \\$\\$\\\\huge\\$\\$'
    """
    text = _AUTOLINK_START.sub(WORD_JOINER, plain(value, limit)).replace("@", "@" + WORD_JOINER)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def shown_json(value: Any, limit: int = SHOWN_BLOCK_CHARS, *, indent: int | None = 2) -> str:
    """``value`` as JSON for a code block: invisible characters written as ``\\uXXXX``, cut to ``limit``.

    Unlike :func:`plain` nothing is dropped: a bidi override in a payload shows as ``\\u202e``,
    so the operator sees that it is there. ``indent=None`` gives one compact line.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, default=str)
    # json.dumps already escaped the control characters inside strings: a raw newline here is
    # indentation. What it keeps raw are format characters and the Unicode line separators.
    text = "".join(ch if ch == "\n" or _visible(ch) else json.dumps(ch)[1:-1] for ch in text[: limit * 2 + 16])
    return _cut(text, limit)
