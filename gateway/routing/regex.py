"""The regular expressions of `matches` conditions, which run in time linear in the subject: no pattern can
make one payload stall the process.

They run in RE2, except plain text: RE2 lets go of the GIL for every call and must take it back, which
waits for whichever thread holds it (the store's writer, under load), so that a 1 µs search took 100 µs
and more. A pattern of plain characters, `.`, escaped punctuation, and `^` first or `$` last
(`@support\\.example\\.com$`, the usual kind) repeats nothing, so Python's `re` cannot backtrack on it
either: such a pattern runs there, translated to RE2's meaning (`^` and `$` at the ends of the text only,
`.` anything but a newline). Patterns that ignore case stay in RE2, whose case folding is the reference.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

import re2

Search = Callable[[str], bool]

_SPECIAL = frozenset("^$.*+?()[]{}|")  # and the backslash, read with what it escapes
_ESCAPABLE = frozenset(string.punctuation)


def _options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the config error says it; RE2 would also write it to stderr
    options.case_sensitive = case_sensitive
    return options


_RE2_OPTIONS = _options(case_sensitive=True)
_RE2_ANY_CASE = _options(case_sensitive=False)


def compile_search(pattern: str, any_case: bool = False) -> Search:
    """Whether `pattern` is found in a text; ValueError with the reason for a pattern RE2 refuses."""
    plain = None if any_case else as_plain(pattern)
    if plain is not None:
        found = re.compile(plain).search
        return lambda text: found(text) is not None
    try:
        search = re2.compile(pattern, _RE2_ANY_CASE if any_case else _RE2_OPTIONS).search
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(reason) from None
    return lambda text: search(text) is not None


def as_plain(pattern: str) -> str | None:
    """`pattern` as Python `re` source when it is plain text (see the module's docstring), else None."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1 : index + 2]
            if escaped not in _ESCAPABLE:
                return None  # a class (\d), an assertion (\b) or a code (\x41): RE2's business
            parts.append(re.escape(escaped))
            index += 2
            continue
        if char == "^" and index == 0:
            parts.append(r"\A")
        elif char == "$" and index == len(pattern) - 1:
            parts.append(r"\Z")
        elif char == ".":
            parts.append(".")
        elif char in _SPECIAL:
            return None
        else:
            parts.append(re.escape(char))
        index += 1
    return "".join(parts)
