"""The count of wrong admin tokens per client: when a client must wait, and for how long."""

from __future__ import annotations

import pytest

from gateway.web.token_guesses import TokenGuesses, client_of, waiting


def wrong(guesses: TokenGuesses, client: str, at_ms: int) -> tuple[bool, int]:
    return guesses.attempt(client, at_ms, lambda: False)


def test_a_client_waits_once_it_reached_the_limit_until_its_oldest_wrong_token_leaves_the_window() -> None:
    guesses = TokenGuesses(limit=3, window_ms=1000)
    assert [wrong(guesses, "10.0.0.1", at_ms) for at_ms in (0, 100, 200)] == [(False, 0)] * 3
    assert guesses.attempt("10.0.0.1", 300, lambda: True) == (False, 700)  # the right token is not looked at
    assert guesses.attempt("10.0.0.2", 300, lambda: True) == (True, 0)  # another address is counted apart
    assert wrong(guesses, "10.0.0.1", 1000) == (False, 0)  # the first left the window: two were in it
    assert guesses.wait_ms("10.0.0.1", 1001) == 99  # 100, 200 and 1000 in the window


def test_a_right_token_forgets_the_clients_wrong_ones() -> None:
    guesses = TokenGuesses(limit=2, window_ms=1000)
    wrong(guesses, "a", 0)
    assert guesses.attempt("a", 1, lambda: True) == (True, 0)
    wrong(guesses, "a", 2)
    assert guesses.wait_ms("a", 3) == 0


def test_beyond_max_clients_the_least_recently_wrong_is_forgotten() -> None:
    guesses = TokenGuesses(limit=2, window_ms=1000, max_clients=2)
    for client in ("a", "b", "a", "c"):  # "a" is wrong again after "b": "b" is forgotten for "c"
        wrong(guesses, client, 0)
    assert guesses.wait_ms("a", 1) == 999
    wrong(guesses, "b", 1)
    assert guesses.wait_ms("b", 2) == 0  # one wrong token, not two


def test_the_token_that_makes_a_client_wait_is_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    guesses = TokenGuesses(limit=2, window_ms=60_000)
    wrong(guesses, "10.0.0.9", 0)
    assert not caplog.records
    wrong(guesses, "10.0.0.9", 1000)
    assert [record.getMessage() for record in caplog.records] == [
        "2 wrong admin tokens from 10.0.0.9 within 60 s: its tries wait 59 s"
    ]


def test_what_a_waiting_client_is_told() -> None:
    assert waiting(1) == ("too many wrong admin tokens from this address: try again in 1 s", {"Retry-After": "1"})
    assert waiting(299_001) == ("too many wrong admin tokens from this address: try again in 300 s",
                                {"Retry-After": "300"})  # fmt: skip
    assert client_of(None) == "unknown" and client_of("127.0.0.1") == "127.0.0.1"
