"""When to issue, renew, back off or wait: pure functions, the clock and dice are inputs.

Nothing here does I/O or reads the clock; ``patrd.tls.controller`` acts on
the :class:`Decision` and persists the :class:`CertState`.

* A certificate is **due** when at most ``renew_before`` of its lifetime is
  left (default 1/3: day 60 of a 90-day certificate), or at the time the
  CA's renewal information (ARI, RFC 9773) suggests, when it offers it.
* A failed attempt sets ``failures`` and a **backoff**: initial * 2^(n-1),
  capped, times a jitter factor in [0.75, 1) (so, while it doubles, a wait
  is never shorter than the one before), and never sooner than a CA's
  ``Retry-After``.
* At most ``max_orders_per_hour`` ACME orders per name in any hour, whatever
  happens (a crash loop of the daemon included: the order times are stored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from patrd.kit.backoff import Backoff

HOUR_S = 3600.0


class Verdict(StrEnum):
    KEEP = "keep"  # valid and not due: look again at ``at``
    ISSUE = "issue"  # order (or sign) now
    WAIT = "wait"  # due, but backing off or capped until ``at``


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Policy:
    renew_before: float = 1 / 3
    backoff_initial_s: float = 300.0
    backoff_max_s: float = 6 * HOUR_S
    max_orders_per_hour: int = 5
    expiry_alert_s: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Held:
    """The certificate patrd serves for a name, as far as decisions go."""

    not_before: float
    not_after: float
    serial: int
    acceptable: bool = True  # False: from an issuer we no longer want (local CA → ACME)


@dataclass(frozen=True, slots=True)
class CertState:
    """Per-name bookkeeping that survives restarts (a JSON object in the store)."""

    failures: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    last_attempt_at: float = 0.0
    attempts: int = 0  # every try, successful or not
    orders: tuple[float, ...] = ()  # when ACME orders were placed (last hour only)
    orders_total: int = 0
    issued_at: float = 0.0
    renewals: int = 0
    ari_serial: int = 0  # the certificate the ARI answer below is about
    ari_renew_at: float | None = None
    ari_fetch_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "attempts": self.attempts,
            "orders": list(self.orders),
            "orders_total": self.orders_total,
            "issued_at": self.issued_at,
            "renewals": self.renewals,
            "ari_serial": str(self.ari_serial),
            "ari_renew_at": self.ari_renew_at,
            "ari_fetch_at": self.ari_fetch_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CertState:
        ari = data.get("ari_renew_at")
        return cls(
            failures=int(data.get("failures", 0)),
            next_attempt_at=float(data.get("next_attempt_at", 0.0)),
            last_error=str(data.get("last_error", "")),
            last_attempt_at=float(data.get("last_attempt_at", 0.0)),
            attempts=int(data.get("attempts", 0)),
            orders=tuple(float(t) for t in data.get("orders", ())),
            orders_total=int(data.get("orders_total", 0)),
            issued_at=float(data.get("issued_at", 0.0)),
            renewals=int(data.get("renewals", 0)),
            ari_serial=int(data.get("ari_serial", "0")),
            ari_renew_at=float(ari) if ari is not None else None,
            ari_fetch_at=float(data.get("ari_fetch_at", 0.0)),
        )


def renewal_due_at(not_before: float, not_after: float, renew_before: float) -> float:
    """The moment only ``renew_before`` of the lifetime is left."""
    return not_after - renew_before * (not_after - not_before)


def ari_renewal_time(window_start: float, window_end: float, now: float, rand: float) -> float:
    """RFC 9773 §4.2: a uniformly random moment in the suggested window.

    ``rand`` in [0, 1). A window already over (or ending now) means: renew
    now. A moment in the past means now. A reversed window is read as its
    start (the CA's mistake should not stop renewal).
    """
    if window_end <= now:
        return now
    if window_end < window_start:
        return max(now, window_start)
    return max(now, window_start + rand * (window_end - window_start))


def renew_at(held: Held, state: CertState, policy: Policy) -> float:
    if state.ari_renew_at is not None and state.ari_serial == held.serial:
        return min(state.ari_renew_at, held.not_after)
    return renewal_due_at(held.not_before, held.not_after, policy.renew_before)


def backoff_delay(
    failures: int, policy: Policy, rand: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (≥ 1)."""
    delay = Backoff(
        initial_s=policy.backoff_initial_s, cap_s=policy.backoff_max_s, jitter=0.25
    ).delay(max(1, failures), rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 24 * HOUR_S))
    return delay


def recent_orders(orders: tuple[float, ...], now: float) -> tuple[float, ...]:
    return tuple(t for t in orders if now - t < HOUR_S)


def order_allowed_at(orders: tuple[float, ...], now: float, max_per_hour: int) -> float:
    """``now`` if another order fits in the hourly cap, else when it will."""
    recent = sorted(recent_orders(orders, now))
    if len(recent) < max_per_hour:
        return now
    return recent[len(recent) - max_per_hour] + HOUR_S


def decide(
    held: Held | None, state: CertState, now: float, policy: Policy, *, capped: bool = True
) -> Decision:
    """What to do about one name now. ``capped=False``: no hourly order cap (local CA)."""
    if held is not None and held.acceptable and now < held.not_after:
        due = renew_at(held, state, policy)
        if now < due:
            return Decision(Verdict.KEEP, due, "valid, not due")
        reason = "renewal due"
    elif held is None:
        reason = "no certificate"
    elif now >= held.not_after:
        reason = "certificate expired"
    else:
        reason = "certificate from another issuer"
    if now < state.next_attempt_at:
        return Decision(
            Verdict.WAIT, state.next_attempt_at, f"{reason}; backing off ({state.failures} failed)"
        )
    if capped:
        allowed = order_allowed_at(state.orders, now, policy.max_orders_per_hour)
        if allowed > now:
            return Decision(
                Verdict.WAIT, allowed, f"{reason}; {policy.max_orders_per_hour} orders in the hour"
            )
    return Decision(Verdict.ISSUE, now, reason)


def failed(
    state: CertState,
    now: float,
    error: str,
    policy: Policy,
    rand: float,
    retry_after: float | None = None,
) -> CertState:
    failures = state.failures + 1
    return replace(
        state,
        failures=failures,
        last_error=error,
        next_attempt_at=now + backoff_delay(failures, policy, rand, retry_after),
    )


def succeeded(state: CertState, now: float, renewal: bool) -> CertState:
    return replace(
        state,
        failures=0,
        last_error="",
        next_attempt_at=0.0,
        issued_at=now,
        renewals=state.renewals + (1 if renewal else 0),
        ari_renew_at=None,
        ari_fetch_at=0.0,
        ari_serial=0,
    )


def alerting(held: Held | None, state: CertState, now: float, policy: Policy) -> bool:
    """Within ``expiry_alert_s`` of expiry and the last renewal attempt failed."""
    return held is not None and state.failures > 0 and held.not_after - now <= policy.expiry_alert_s
