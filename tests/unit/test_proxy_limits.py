"""Proxy limits (pure): token buckets on a fake clock, connection caps, client keys."""

from __future__ import annotations

import pytest

from patrd.proxy.limits import (
    Admission,
    Limits,
    Networks,
    TokenBuckets,
    client_key,
    forwarded_client,
)
from patrd.proxy.options import ProxyOptions


def test_bucket_allows_burst_then_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    now = 100.0
    assert [buckets.take("a", now) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a", now)
    assert wait == pytest.approx(0.5)  # one token every 0.5 s
    assert buckets.take("a", now + 0.25) == pytest.approx(0.25)  # refused: no token yet
    assert buckets.take("a", now + 0.5) == 0.0  # refill reached one token
    assert buckets.take("a", now + 0.5) > 0
    # Other keys have their own bucket.
    assert buckets.take("b", now) == 0.0


def test_bucket_never_exceeds_burst() -> None:
    buckets = TokenBuckets(rate=10.0, burst=2)
    buckets.take("a", 0.0)
    # A long idle time refills to the burst, not beyond.
    assert [buckets.take("a", 1000.0) for _ in range(3)][-1] > 0


def test_rate_over_time_is_the_configured_rate() -> None:
    """Property: over 10 s of constant hammering, accepted ≈ burst + rate * time."""
    buckets = TokenBuckets(rate=5.0, burst=10)
    accepted = 0
    for i in range(10_000):  # one request per millisecond
        if buckets.take("x", i / 1000) == 0.0:
            accepted += 1
    assert 10 + 5 * 10 - 1 <= accepted <= 10 + 5 * 10 + 1


def test_bucket_memory_is_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=100)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", 5.0)
        assert len(buckets) <= 100
    # Idle clients (full buckets) are swept and forgotten; that loses nothing.
    buckets.take("late", 5.0 + 120)
    assert len(buckets) == 1


def test_bad_bucket_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate=1, burst=0)


def test_retry_after_is_whole_seconds() -> None:
    limits = Limits(ProxyOptions(rate_limit_rps=0.5, rate_limit_burst=1))
    assert limits.retry_after("a", 0.0) == 0
    assert limits.retry_after("a", 0.0) == 2  # ceil(1 / 0.5)
    assert limits.retry_after("a", 1.9) == 1  # ceil of 0.1 is still at least 1
    assert Limits(ProxyOptions(rate_limit_rps=0)).retry_after("a", 0.0) == 0  # off


def test_connection_caps() -> None:
    limits = Limits(ProxyOptions(rate_limit_exempt=(), max_connections=3, max_connections_per_ip=2))
    assert limits.admit("a", exempt=False) is Admission.OK
    assert limits.admit("a", exempt=False) is Admission.OK
    assert limits.admit("a", exempt=False) is Admission.TOO_MANY_FROM_CLIENT
    assert limits.admit("lo", exempt=True) is Admission.OK  # exempt from the per-client cap
    assert limits.admit("b", exempt=False) is Admission.TOO_MANY  # global cap: 3 open
    limits.release("a", exempt=False)
    assert limits.open == 2
    assert limits.admit("b", exempt=False) is Admission.OK
    for key, exempt in (("a", False), ("lo", True), ("b", False)):
        limits.release(key, exempt)
    assert limits.open == 0
    assert limits.admit("a", exempt=False) is Admission.OK  # per-client count went back to 0


def test_networks_membership() -> None:
    nets = Networks(["127.0.0.0/8", "::1/128", "10.1.0.0/16"])
    assert "127.0.0.2" in nets and "::1" in nets and "10.1.2.3" in nets
    assert "::ffff:127.0.0.1" in nets  # IPv4-mapped
    assert "10.2.0.1" not in nets and "garbage" not in nets and "" not in nets
    assert not Networks([]) and "127.0.0.1" not in Networks([])


def test_networks_remember_answers_within_a_bound() -> None:
    nets = Networks(["10.0.0.0/8"])
    # Twice over, past the bound (4096 remembered): every answer stays right.
    for _ in range(2):
        for i in range(5000):
            ip = f"10.0.{i // 256}.{i % 256}" if i % 2 else f"192.0.{i // 256}.{i % 256}"
            assert (ip in nets) is bool(i % 2), ip
    assert len(nets._seen) <= 4096
    assert "garbage" not in nets and "garbage" not in nets  # a remembered no


def test_client_key() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2:bbbb::9") == client_key("2001:db8:1:2:aaaa::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("") == ""


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        (b"198.51.100.7", "198.51.100.7"),
        (b"203.0.113.9, 198.51.100.7", "198.51.100.7"),  # the leftmost may be made up
        (b"198.51.100.7, 10.0.0.2", "198.51.100.7"),  # 10.0.0.2 is a trusted hop
        (b"10.0.0.2, 10.0.0.3", "10.0.0.1"),  # only proxies: the peer itself
        (b"198.51.100.7:5555", "198.51.100.7"),
        (b"[2001:db8::5]:443", "2001:db8::5"),
        (b"unknown", "10.0.0.1"),
        (b"", "10.0.0.1"),
    ],
)
def test_forwarded_client(xff: bytes, expected: str) -> None:
    assert forwarded_client(xff, "10.0.0.1", Networks(["10.0.0.0/24"])) == expected


def test_a_bucket_is_one_float_and_whole_tokens_survive_rounding() -> None:
    buckets = TokenBuckets(rate=10.0, burst=2)
    buckets.take("a", 0.0)
    assert isinstance(buckets._buckets["a"], float)  # when full again: ~110 B less than a list
    # Far from 0 the "full again" times round (1000.1 - 1000 is not 0.1): a
    # bucket holding exactly one token must still give it.
    assert [buckets.take("a", 1000.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    assert buckets.take("a", 1000.1) == 0.0
