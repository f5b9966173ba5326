"""Lone UTF-16 surrogates: the Python strings that are not valid Unicode text.

A Python ``str`` may hold code points U+D800–U+DFFF (e.g. from ``bytes.decode(...,
"surrogateescape")`` or a JSON ``\\ud800`` escape); UTF-8 cannot encode them, so such text breaks
every file writer. memgym treats them as invalid data: a codec answers text that holds one with a
parse error (:func:`memgym.codecs.base.checks_unicode`), and trajectory files store any left in a
text field as U+FFFD (:func:`replace_surrogates`).
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
# a JSON escape of a surrogate that is not half of a high + low pair
_LONE_ESCAPE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                          r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def first_surrogate(text: str) -> int:
    """Offset of the first lone surrogate in ``text``, or -1 when it is valid Unicode."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return -1
    match = _SURROGATE.search(text)
    return -1 if match is None else match.start()


def replace_surrogates(text: str, replacement: str = "\ufffd") -> str:
    """``text`` with every lone surrogate replaced (``text`` itself when it has none)."""
    return text if first_surrogate(text) < 0 else _SURROGATE.sub(replacement, text)


def lone_surrogate_escape(text: str) -> int:
    """Offset of the first JSON escape (``\\ud800``) in ``text`` that spells a lone surrogate,
    or -1."""
    match = _LONE_ESCAPE.search(text)
    return -1 if match is None else match.start()
