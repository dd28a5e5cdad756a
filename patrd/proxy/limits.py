"""Proxy limits: per-client request rate (token buckets) and connection caps.

Pure bookkeeping with the clock passed in; ``server.py`` calls it once per
connection (:meth:`Limits.admit` / :meth:`Limits.release`) and once per
request (:meth:`Limits.retry_after`). Nothing here does I/O.

Clients are keyed by address; IPv6 clients by their /64 (one subscriber
usually holds a whole /64, so per-address keys would be free to multiply).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from enum import IntEnum
from typing import Final

from patrd.proxy.options import ProxyOptions

__all__ = [
    "Admission",
    "Limits",
    "Networks",
    "TokenBuckets",
    "client_key",
    "forwarded_client",
]

# Buckets are swept (full ones dropped: a full bucket is the same as none)
# at least this often, and whenever the table reaches its size cap.
_SWEEP_EVERY_S: Final = 60.0
MAX_CLIENTS: Final = 100_000  # rate-limit buckets kept (memory bound)
_SEEN_MAX: Final = 4096  # addresses whose network membership is remembered
# A token, less the rounding of "full again" times (a bucket of whole tokens
# must not refuse for 1e-13 of one).
_ONE_TOKEN: Final = 1.0 - 1e-9


class Admission(IntEnum):
    OK = 0
    TOO_MANY = 503  # the global connection cap is reached
    TOO_MANY_FROM_CLIENT = 429  # this client's connection cap is reached


class Networks:
    """A set of IP networks; ``ip in networks`` for address strings.

    Answers are remembered per address string (at most ``_SEEN_MAX``, then
    forgotten all at once): parsing an address costs about 25 µs, a tenth of
    a resumed TLS handshake's CPU. A connection's peer is checked once per
    address (the server's ``_Peer`` records keep the answer); what this saves
    now is the per-request walk of a trusted proxy's X-Forwarded-For and the
    exempt check of the client found there.
    """

    __slots__ = ("_networks", "_seen")

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, ip: object) -> bool:
        if not self._networks or not isinstance(ip, str):
            return False
        seen = self._seen
        answer = seen.get(ip)
        if answer is None:
            if len(seen) >= _SEEN_MAX:
                seen.clear()
            answer = seen[ip] = self._lookup(ip)
        return answer

    def _lookup(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in n for n in self._networks)


def client_key(ip: str) -> str:
    """The rate-limit key of an address: itself (IPv4) or its /64 (IPv6)."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.partition("%")[0])
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def forwarded_client(xff: bytes, peer: str, trusted: Networks) -> str:
    """The client address behind trusted proxies.

    ``xff`` is the X-Forwarded-For a trusted ``peer`` sent. Walking it from
    the right (the entry the nearest proxy added), skip trusted proxies; the
    first other address is the client. Entries left of it could be made up by
    the client, so they are never used. Garbage → ``peer``.
    """
    for entry in reversed(xff.split(b",")):
        text = entry.strip().decode("latin-1")
        if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
            text = text[1 : text.index("]")]
        elif text.count(":") == 1:  # "192.0.2.1:443"
            text = text.partition(":")[0]
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return peer
        if text not in trusted:
            return text
    return peer


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens per second, at most ``burst``.

    Each request takes a token. A bucket is kept as one float, the time at
    which it is full again (the GCRA form of a token bucket: its tokens at
    ``now`` are ``burst - (full - now) * rate``): a float per client instead
    of a list of two, about 110 bytes less per limited client (issue 20).
    Memory is bounded: full buckets (clients idle for ``burst / rate``
    seconds) are dropped on a sweep, and if the table is still at
    ``max_keys`` after a sweep it is cleared.
    """

    __slots__ = ("_buckets", "_burst", "_max_keys", "_next_sweep", "_rate", "_step")

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._step = 1.0 / rate  # the time one token takes to come back
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[str, float] = {}  # key → when its bucket is full again
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is."""
        full = self._buckets.get(key)
        if full is None:
            if now >= self._next_sweep or len(self._buckets) >= self._max_keys:
                self._sweep(now)
            self._buckets[key] = now + self._step  # burst - 1 tokens left
            return 0.0
        behind = full - now if full > now else 0.0  # seconds until full again
        tokens = self._burst - behind * self._rate
        if tokens >= _ONE_TOKEN:
            self._buckets[key] = now + behind + self._step
            return 0.0
        return (1.0 - tokens) / self._rate

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_EVERY_S
        buckets = self._buckets
        full = [key for key, at in buckets.items() if at <= now]
        for key in full:
            del buckets[key]
        if len(buckets) >= self._max_keys:
            buckets.clear()  # more active clients than we keep: start over


class Limits:
    """The proxy's limits; one instance per server."""

    __slots__ = ("_buckets", "_exempt", "_forwarded", "_options", "_per_client", "open")

    def __init__(self, options: ProxyOptions, max_clients: int = MAX_CLIENTS) -> None:
        self._options = options
        self._exempt = Networks(options.rate_limit_exempt)
        rate, burst = options.rate_limit_rps, options.rate_limit_burst
        self._buckets = TokenBuckets(rate, burst, max_clients) if rate > 0 else None
        # This process sees 1/forwarded_share of a trusted proxy's requests (the
        # worker processes share its connections): clients behind trusted
        # proxies get rate/share and burst/share here (patrd/proxy/workers.py).
        share = max(1, options.forwarded_share)
        self._forwarded = (
            TokenBuckets(rate / share, max(1, math.ceil(burst / share)), max_clients)
            if rate > 0 and share > 1
            else self._buckets
        )
        self._per_client: dict[str, int] = {}
        self.open = 0  # admitted connections not yet released

    def exempt(self, ip: str) -> bool:
        return ip in self._exempt

    def admit(self, key: str, exempt: bool) -> Admission:
        """A new connection from client ``key``; on OK the caller must ``release`` it."""
        options = self._options
        if options.max_connections and self.open >= options.max_connections:
            return Admission.TOO_MANY
        if options.max_connections_per_ip and not exempt:
            count = self._per_client.get(key, 0)
            if count >= options.max_connections_per_ip:
                return Admission.TOO_MANY_FROM_CLIENT
            self._per_client[key] = count + 1
        self.open += 1
        return Admission.OK

    def release(self, key: str, exempt: bool) -> None:
        self.open -= 1
        if self._options.max_connections_per_ip and not exempt:
            count = self._per_client.get(key, 0) - 1
            if count > 0:
                self._per_client[key] = count
            else:
                self._per_client.pop(key, None)

    def retry_after(self, key: str, now: float, forwarded: bool = False) -> int:
        """0 if client ``key`` may send a request now, else whole seconds to wait (>= 1).

        ``forwarded``: ``key`` is a client behind a trusted proxy.
        """
        buckets = self._forwarded if forwarded else self._buckets
        if buckets is None:
            return 0
        wait = buckets.take(key, now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    @property
    def rate_limited(self) -> bool:
        return self._buckets is not None
