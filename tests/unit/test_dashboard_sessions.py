"""Dashboard sessions, CSRF tokens and the login limiter: pure logic, the clock as input."""

from __future__ import annotations

import pytest

from patrd.dashboard.sessions import LoginLimiter, Sessions, password_matches


def test_a_session_lives_until_its_idle_timeout_or_its_ttl() -> None:
    sessions = Sessions(ttl_s=100, idle_s=30)
    s = sessions.create("10.0.0.1", now=0)
    assert sessions.get(s.token, now=29) is s  # used at 29: idle clock restarts
    assert sessions.get(s.token, now=58) is s
    assert sessions.get(s.token, now=88) is None  # 30 s idle
    s = sessions.create("10.0.0.1", now=200)
    for t in range(210, 300, 20):
        assert sessions.get(s.token, now=t) is s  # never idle for 30 s ...
    assert sessions.get(s.token, now=300) is None  # ... but 100 s after login it ends
    assert len(sessions) == 0


def test_tokens_are_random_and_separate_from_csrf_tokens() -> None:
    sessions = Sessions(ttl_s=100, idle_s=100)
    a = sessions.create("c", now=0)
    b = sessions.create("c", now=0)
    assert len({a.token, a.csrf, b.token, b.csrf}) == 4
    assert len(a.token) >= 43  # 32 random bytes
    assert sessions.get(a.csrf, now=1) is None  # a CSRF token is no session token
    assert sessions.get("", now=1) is None
    assert sessions.get(None, now=1) is None
    assert sessions.get(a.token + "x", now=1) is None


@pytest.mark.parametrize(
    ("presented", "ok"),
    [(None, False), ("", False), ("nope", False), ("CSRF", True)],
)
def test_csrf_token_must_match(presented: str | None, ok: bool) -> None:
    session = Sessions(ttl_s=10, idle_s=10).create("c", now=0)
    if presented == "CSRF":
        presented = session.csrf
    assert session.csrf_matches(presented) is ok


def test_revoke_and_revoke_all() -> None:
    sessions = Sessions(ttl_s=100, idle_s=100)
    a, b = sessions.create("c", 0), sessions.create("c", 0)
    assert sessions.revoke(a.token) is True
    assert sessions.revoke(a.token) is False
    assert sessions.get(a.token, 1) is None and sessions.get(b.token, 1) is b
    assert sessions.revoke_all() == 1
    assert sessions.get(b.token, 1) is None


def test_the_table_is_bounded_and_drops_the_oldest() -> None:
    sessions = Sessions(ttl_s=100, idle_s=100, max_sessions=3)
    made = [sessions.create("c", now=i) for i in range(5)]
    assert len(sessions) == 3
    assert [sessions.get(s.token, 10) is not None for s in made] == [False, False, True, True, True]


def test_expired_sessions_are_swept_on_create() -> None:
    sessions = Sessions(ttl_s=10, idle_s=10)
    for i in range(5):
        sessions.create("c", now=i)
    sessions.create("c", now=100)
    assert len(sessions) == 1


def test_password_matches() -> None:
    assert password_matches("correct horse", "correct horse")
    assert not password_matches("correct hors", "correct horse")
    assert not password_matches("", "correct horse")
    assert not password_matches("correct horse ", "correct horse")


def test_five_failures_a_minute_then_429_for_that_client_only() -> None:
    limiter = LoginLimiter(per_client=5, overall=100, window_s=60)
    for i in range(5):
        assert limiter.retry_after("a", now=i) is None
        limiter.failed("a", now=i)
    assert limiter.retry_after("a", now=5) == 55  # the first failure leaves at 60
    assert limiter.retry_after("b", now=5) is None
    assert limiter.retry_after("a", now=59.5) == 1  # never 0
    assert limiter.retry_after("a", now=60) is None  # a sliding window
    limiter.failed("a", now=60)
    assert limiter.retry_after("a", now=60.5) == 1  # failures 1..4 and 60 still count
    assert limiter.retry_after("a", now=61) is None


def test_success_clears_the_client_but_not_the_global_count() -> None:
    limiter = LoginLimiter(per_client=3, overall=5, window_s=60)
    for i in range(3):
        limiter.failed("a", now=i)
    assert limiter.retry_after("a", now=3) is not None
    limiter.succeeded("a")
    assert limiter.retry_after("a", now=3) is None
    limiter.failed("b", now=4)
    limiter.failed("c", now=5)
    # 5 failures in all within the window: everyone waits (forged addresses
    # behind a proxy cannot multiply the guesses without bound).
    assert limiter.retry_after("d", now=6) == 54


def test_the_limiter_forgets_and_stays_bounded() -> None:
    limiter = LoginLimiter(per_client=2, overall=10_000, window_s=60, max_clients=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 250}.{i % 250}", now=0)
    assert len(limiter._failures) == 100
    assert limiter.retry_after("10.0.0.0", now=61) is None
    assert len(limiter._failures) == 0
