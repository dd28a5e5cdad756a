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


def test_five_attempts_then_a_backoff_for_that_client_only() -> None:
    limiter = LoginLimiter(per_client=5, first_delay_s=60, max_delay_s=900)
    for i in range(5):
        assert limiter.reserve("a", now=i) is None
    assert limiter.retry_after("a", now=4) == 60  # the 5th attempt was at 4
    assert limiter.reserve("a", now=5) == 59  # refused: nothing counted
    assert limiter.retry_after("b", now=5) is None  # others are not affected
    assert limiter.retry_after("a", now=63.5) == 1  # never 0
    assert limiter.reserve("a", now=64) is None  # the 6th: doubles the next wait
    assert limiter.retry_after("a", now=64) == 120
    assert limiter.reserve("a", now=184) is None
    assert limiter.retry_after("a", now=184) == 240


def test_the_backoff_is_capped() -> None:
    limiter = LoginLimiter(per_client=1, first_delay_s=10, max_delay_s=100)
    assert [limiter.delay(n) for n in range(8)] == [0, 10, 20, 40, 80, 100, 100, 100]
    assert limiter.delay(10_000) == 100


def test_reservations_are_counted_before_any_answer() -> None:
    """Concurrent logins: each reserves before awaiting, so only per_client get through."""
    limiter = LoginLimiter(per_client=3)
    answers = [limiter.reserve("a", now=0) for _ in range(10)]
    assert answers[:3] == [None, None, None]
    assert all(wait == 60 for wait in answers[3:])


def test_success_clears_only_that_client() -> None:
    limiter = LoginLimiter(per_client=3)
    for i in range(3):
        limiter.reserve("a", now=i)
        limiter.reserve("b", now=i)
    assert limiter.retry_after("a", now=3) is not None
    limiter.succeeded("a")
    assert limiter.retry_after("a", now=3) is None
    assert limiter.retry_after("b", now=3) is not None


def test_many_failing_clients_do_not_lock_out_another() -> None:
    """No global cap: attempts from everywhere else never refuse a fresh client."""
    limiter = LoginLimiter(per_client=2)
    for i in range(5000):
        for _ in range(3):
            limiter.reserve(f"10.1.{i // 250}.{i % 250}", now=0)
    assert limiter.retry_after("192.0.2.1", now=0) is None
    assert limiter.reserve("192.0.2.1", now=0) is None


def test_the_limiter_forgets_and_stays_bounded() -> None:
    limiter = LoginLimiter(per_client=2, forget_s=3600, max_clients=100)
    for i in range(1000):
        limiter.reserve(f"10.0.{i // 250}.{i % 250}", now=0)
    assert len(limiter._failures) == 100
    assert limiter.retry_after("10.0.0.0", now=3600) is None
    assert len(limiter._failures) == 0
