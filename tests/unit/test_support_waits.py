"""The shared bounded waits (tests/support/waits.py): what they return, how they fail."""

from __future__ import annotations

import time

import pytest

from tests.support.waits import until, until_sync


async def test_until_returns_the_first_truthy_value_of_a_sync_or_async_predicate() -> None:
    seen = iter([0, None, "", {"ready": True}])
    assert await until(lambda: next(seen), 5, "ready", interval=0.01) == {"ready": True}

    calls = 0

    async def third_time() -> int:
        nonlocal calls
        calls += 1
        return calls if calls == 3 else 0

    assert await until(third_time, 5, "the third call", interval=0.01) == 3


async def test_until_fails_with_what_the_last_value_and_the_detail() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError) as err:
        await until(lambda: [], 0.2, "a message", interval=0.05, detail=lambda: "inbox: empty")
    assert 0.2 <= time.monotonic() - started < 2
    assert str(err.value) == "a message within 0.2s: []\ninbox: empty"


def test_until_sync_returns_or_fails_the_same_way() -> None:
    seen = iter([False, False, "up"])
    assert until_sync(lambda: next(seen), 5, "up", interval=0.01) == "up"
    with pytest.raises(AssertionError, match=r"^never within 0.1s: None$"):
        until_sync(lambda: None, 0.1, "never", interval=0.02)


def test_an_exception_in_the_predicate_is_not_swallowed() -> None:
    def broken() -> bool:
        raise RuntimeError("patrd exited 1")

    with pytest.raises(RuntimeError, match="patrd exited 1"):
        until_sync(broken, 5, "never reached")
