"""Renewal decisions: pure functions, the clock and the dice are inputs."""

from __future__ import annotations

import pytest

from patrd.tls.renewal import (
    HOUR_S,
    CertState,
    Held,
    Policy,
    Verdict,
    alerting,
    ari_renewal_time,
    backoff_delay,
    decide,
    failed,
    order_allowed_at,
    renewal_due_at,
    succeeded,
)

DAY = 86400.0
POLICY = Policy(renew_before=1 / 3, backoff_initial_s=300, backoff_max_s=6 * HOUR_S)
CERT = Held(not_before=0.0, not_after=90 * DAY, serial=7)


@pytest.mark.parametrize(
    ("held", "state", "now", "verdict", "at"),
    [
        (None, CertState(), 100.0, Verdict.ISSUE, 100.0),
        (CERT, CertState(), 59 * DAY, Verdict.KEEP, 60 * DAY),
        (CERT, CertState(), 60 * DAY, Verdict.ISSUE, 60 * DAY),
        (CERT, CertState(), 91 * DAY, Verdict.ISSUE, 91 * DAY),  # expired
        (
            Held(0.0, 90 * DAY, 7, acceptable=False),  # from the local CA, ACME wanted
            CertState(),
            DAY,
            Verdict.ISSUE,
            DAY,
        ),
        (None, CertState(failures=2, next_attempt_at=500.0), 100.0, Verdict.WAIT, 500.0),
        (
            CERT,
            CertState(failures=1, next_attempt_at=61 * DAY),
            60.5 * DAY,
            Verdict.WAIT,
            61 * DAY,
        ),
        (None, CertState(orders=(10.0, 20.0, 30.0, 40.0, 50.0)), 100.0, Verdict.WAIT, 10 + HOUR_S),
        (None, CertState(orders=(10.0, 20.0, 30.0, 40.0)), 100.0, Verdict.ISSUE, 100.0),
        # ARI says renew earlier than the 1/3 rule would (for this very certificate)...
        (CERT, CertState(ari_serial=7, ari_renew_at=10 * DAY), 11 * DAY, Verdict.ISSUE, 11 * DAY),
        # ... but an answer about another certificate is ignored.
        (CERT, CertState(ari_serial=8, ari_renew_at=10 * DAY), 11 * DAY, Verdict.KEEP, 60 * DAY),
    ],
)
def test_decide(
    held: Held | None, state: CertState, now: float, verdict: Verdict, at: float
) -> None:
    decision = decide(held, state, now, POLICY)
    assert decision.verdict is verdict
    assert decision.at == pytest.approx(at)


def test_threshold_one_makes_a_fresh_certificate_due() -> None:
    fresh = Held(not_before=1000.0, not_after=1000.0 + 90 * DAY, serial=1)
    policy = Policy(renew_before=1.0)
    assert renewal_due_at(fresh.not_before, fresh.not_after, 1.0) == fresh.not_before
    assert decide(fresh, CertState(), 1001.0, policy).verdict is Verdict.ISSUE


def test_local_ca_is_not_capped() -> None:
    state = CertState(orders=tuple(float(i) for i in range(10)))
    assert decide(None, state, 20.0, POLICY, capped=False).verdict is Verdict.ISSUE


def test_backoff_grows_then_caps_and_honours_retry_after() -> None:
    lows = [backoff_delay(n, POLICY, 0.0) for n in range(1, 10)]
    highs = [backoff_delay(n, POLICY, 0.999) for n in range(1, 10)]
    assert lows[:4] == [225.0, 450.0, 900.0, 1800.0]  # 300 * 2^(n-1) * 0.75
    for n in range(1, 7):  # while doubling, a wait is never shorter than the one before
        assert highs[n - 1] < lows[n]
    assert all(
        0.75 * POLICY.backoff_max_s <= w <= POLICY.backoff_max_s for w in lows[7:] + highs[7:]
    )
    assert backoff_delay(1, POLICY, 0.5, retry_after=7200.0) == 7200.0
    assert backoff_delay(1, POLICY, 0.5, retry_after=10 * DAY) == 24 * HOUR_S


def test_failures_and_success_bookkeeping() -> None:
    state = failed(CertState(), 1000.0, "boom", POLICY, 0.0)
    assert (state.failures, state.last_error, state.next_attempt_at) == (1, "boom", 1225.0)
    state = failed(state, 2000.0, "boom", POLICY, 0.0, retry_after=3600.0)
    assert state.failures == 2 and state.next_attempt_at == 5600.0
    done = succeeded(state, 3000.0, renewal=True)
    assert (done.failures, done.last_error, done.next_attempt_at, done.renewals) == (0, "", 0, 1)
    assert CertState.from_json(state.to_json()) == state


def test_order_cap_window() -> None:
    orders = (0.0, 100.0, 200.0)
    assert order_allowed_at(orders, 300.0, 3) == HOUR_S
    assert order_allowed_at(orders, HOUR_S + 1, 3) == HOUR_S + 1
    assert order_allowed_at(orders, 300.0, 4) == 300.0


@pytest.mark.parametrize(
    ("start", "end", "now", "rand", "expected"),
    [
        (100.0, 200.0, 0.0, 0.0, 100.0),
        (100.0, 200.0, 0.0, 0.5, 150.0),
        (100.0, 200.0, 0.0, 0.999, pytest.approx(199.9)),
        (100.0, 200.0, 150.0, 0.0, 150.0),  # a moment already past: now
        (100.0, 200.0, 250.0, 0.3, 250.0),  # the window is over: now
        (300.0, 200.0, 0.0, 0.5, 300.0),  # reversed window: its start
    ],
)
def test_ari_window_to_renewal_time(
    start: float, end: float, now: float, rand: float, expected: float
) -> None:
    assert ari_renewal_time(start, end, now, rand) == expected


def test_alert_within_seven_days_when_renewal_keeps_failing() -> None:
    soon = Held(0.0, 100 * DAY, 1)
    assert not alerting(soon, CertState(), 94 * DAY, POLICY)
    assert alerting(soon, CertState(failures=3), 94 * DAY, POLICY)
    assert not alerting(soon, CertState(failures=3), 90 * DAY, POLICY)
    assert not alerting(None, CertState(failures=3), 94 * DAY, POLICY)
