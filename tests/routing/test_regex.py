"""`matches` patterns: plain ones run in Python's `re` and must mean exactly what they mean in RE2."""

from __future__ import annotations

import itertools

import pytest
import re2

from gateway.routing.regex import as_plain, compile_search

ATOMS = ["a", "b", ".", r"\.", r"\$", "é"]
SUBJECTS = ["".join(chars) for size in range(4) for chars in itertools.product("ab.\n$é", repeat=size)]


def plain_patterns() -> list[str]:
    """Every pattern of up to three atoms, with and without each anchor."""
    bodies = ["".join(atoms) for size in range(4) for atoms in itertools.product(ATOMS, repeat=size)]
    return [f"{start}{body}{end}" for body in bodies for start in ("", "^") for end in ("", "$")]


def test_plain_patterns_find_what_re2_finds() -> None:
    re2_options = re2.Options()
    differences = []
    for pattern in plain_patterns():
        assert as_plain(pattern) is not None, pattern
        fast = compile_search(pattern)
        reference = re2.compile(pattern, re2_options)
        differences += [(pattern, subject) for subject in SUBJECTS if fast(subject) != bool(reference.search(subject))]
    assert differences == []


@pytest.mark.parametrize(
    "pattern",
    ["a*", "a+b", "a?", "a{2}", "(a)", "[ab]", "a|b", r"\d", r"\bword", r"\x41", "a^", "$a", "\\"],
)
def test_anything_that_repeats_groups_or_names_a_class_stays_in_re2(pattern: str) -> None:
    assert as_plain(pattern) is None


def test_a_pattern_that_ignores_case_matches_either_case_and_still_anchors() -> None:
    search = compile_search(r"@Example\.COM$", any_case=True)
    assert search("bob@example.com") and search("BOB@EXAMPLE.COM") and not search("bob@example.com.evil")


def test_a_pattern_re2_refuses_says_why() -> None:
    with pytest.raises(ValueError, match="missing"):
        compile_search("(unclosed")
