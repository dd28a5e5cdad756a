"""Failover: which upstream failures are tried again on another instance, and
the marks that make the balancer avoid an instance for a while. Pure; the
server (server.py) does the I/O and holds the marks.

A connection to an instance that is refused, reset during the handshake,
unreachable or timed out opening never carried a byte of the request (the
proxy writes only once the connection is open), so the request is sent to
another instance of the same route, whatever its method: at most
:data:`MAX_FAILOVERS` others, each tried once, while the client's own
deadline still runs. The instance that failed is **marked down** for
:data:`DOWN_S` seconds: new requests go to the route's other instances
meanwhile, unless every one of them is marked (a mark is a guess; an
instance the controller still lists is tried rather than answering 502
without trying). A table in which the instance is gone drops its mark.

Other connect failures (a TLS certificate that does not verify, a name that
does not resolve) are answered 502 as before: another instance would most
likely fail the same way.
"""

from __future__ import annotations

import errno
from collections.abc import Collection
from typing import Final

from patrd.proxy.router import Backend

# Other instances a request may be sent to after the first one failed to connect.
MAX_FAILOVERS: Final = 2
# How long the balancer avoids an instance whose connection failed.
DOWN_S: Final = 5.0

# What a connect failure that reached no application looks like.
_NOT_REACHED: Final = frozenset(
    {
        errno.ECONNREFUSED,  # nothing listens (a stopped node's published port)
        errno.ECONNRESET,  # reset during the handshake (TLS, or a port proxy giving up)
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,  # no route, or ARP unanswered: a node that is gone
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,  # the kernel gave up on the SYN
    }
)

Key = tuple[str, int]  # a backend's (host, port), as the server keys its pools


def not_reached(exc: BaseException) -> bool:
    """``exc`` (from opening a connection) says the instance could not be reached.

    ``TimeoutError`` is the proxy's own connect timeout
    (``upstream_connect_timeout_s``): no SYN-ACK, the node is likely gone.
    """
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _NOT_REACHED


def expire(down: dict[Key, float], now: float) -> None:
    """Drop the marks that have run out (``down``: backend → loop time the mark ends)."""
    for key in [key for key, until in down.items() if until <= now]:
        del down[key]


def usable(backends: tuple[Backend, ...], down: Collection[Key]) -> tuple[Backend, ...]:
    """The backends a new request may go to: those not marked down, or all of
    them when every one is marked."""
    up = tuple(b for b in backends if (b.host, b.port) not in down)
    return up or backends


def next_backends(
    backends: tuple[Backend, ...], down: Collection[Key], tried: Collection[Key]
) -> tuple[Backend, ...]:
    """Where a request whose connection failed may go next: the instances it
    has not tried that are not marked down; none (→ 502) after
    :data:`MAX_FAILOVERS` failovers (``tried`` holds every instance that
    failed, the first one included)."""
    if len(tried) > MAX_FAILOVERS:
        return ()
    left = [b for b in backends if (b.host, b.port) not in tried]
    return tuple(b for b in left if (b.host, b.port) not in down)
