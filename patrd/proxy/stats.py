"""Per-deployment request counters of the proxy, read by the Prometheus collector.

The hot path does a few integer increments per request (status class, one
latency bucket found by ``bisect`` over a tuple, the count); no lock (the
proxy runs on one event loop), no allocation beyond the float of the
duration. The table is created per deployment on its first request and lives
as long as the proxy: a deleted deployment's counters stay frozen, which is
what Prometheus counters expect.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
STATUS_CLASSES: tuple[str, ...] = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


class DeploymentCounters:
    """Requests of one deployment answered by the proxy (including its own 502/503/429)."""

    __slots__ = ("buckets", "classes", "count", "latency_sum")

    def __init__(self) -> None:
        self.classes = [0] * len(STATUS_CLASSES)  # index: status // 100 (0: no answer)
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)  # non-cumulative; last is +Inf
        self.count = 0
        self.latency_sum = 0.0

    def record(self, status: int, seconds: float) -> None:
        cls = status // 100
        self.classes[cls if 1 <= cls <= 5 else 0] += 1
        self.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.count += 1
        self.latency_sum += seconds
