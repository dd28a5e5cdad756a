"""One backoff policy for every retry loop in patrd.

``Backoff`` is a frozen value: the delay after the n-th failure in a row is
``initial_s * factor ** (n - 1)``, capped at ``cap_s``, then scaled by
``1 - jitter + jitter * rand`` (``rand`` in [0, 1) from the caller, so with
``jitter=0.25`` the delay lands in [75 %, 100 %] of the capped value).

``BackoffState`` counts failures for one retried thing. The clock and the
random source are inputs (``now``, ``rand``): nothing here reads time or
draws random numbers, so every decision is a table test.

``reset_after_s``: a run that lasted at least this long before failing
counts as healthy, and the failure that ends it starts the count over (the
Supervisor and the proxy workers use this; loops that reset on every success
call ``succeeded()`` instead).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float
    cap_s: float
    factor: float = 2.0
    reset_after_s: float | None = None
    jitter: float = 0.0  # fraction of the delay that rand may take away

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.cap_s < 0:
            raise ValueError("backoff delays must not be negative")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")
        if self.reset_after_s is not None and self.reset_after_s < 0:
            raise ValueError("backoff reset_after_s must not be negative")

    def delay(self, failures: int, rand: float = 1.0) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        base = float(min(self.cap_s, self.initial_s * self.factor ** (failures - 1)))
        if self.jitter == 0:
            return base
        return base * (1.0 - self.jitter + self.jitter * rand)


@dataclass(slots=True)
class BackoffState:
    """Failures in a row of one retried thing, under ``policy``."""

    policy: Backoff
    failures: int = 0
    started_at: float | None = None

    def started(self, now: float) -> None:
        """An attempt (a run) begins at ``now``."""
        self.started_at = now

    def failed(self, now: float, rand: float = 1.0) -> float:
        """Record a failure at ``now``; return the delay before the next attempt."""
        reset_after = self.policy.reset_after_s
        if (
            reset_after is not None
            and self.started_at is not None
            and now - self.started_at >= reset_after
        ):
            self.failures = 0
        self.started_at = None
        self.failures += 1
        return self.policy.delay(self.failures, rand)

    def succeeded(self) -> None:
        self.failures = 0
        self.started_at = None

    @property
    def pending(self) -> float:
        """The delay the current failure count implies (0 after a success)."""
        return self.policy.delay(self.failures)
