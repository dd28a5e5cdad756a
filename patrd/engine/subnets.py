"""Subnets for deployment networks: small ones, from patrd's own pool. Pure.

Docker's default address pools hold about 30 bridge networks (a /16 or /20
each); patrd makes one network per deployment, so it hands out /24s from a
pool of its own instead (256 networks in the default 10.213.0.0/16).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def pick_subnet(pool: str, prefix: int, used: Iterable[str]) -> str | None:
    """The first ``/prefix`` of ``pool`` that overlaps nothing in ``used``; None when full."""
    base = ipaddress.ip_network(pool)
    taken: list[Network] = []
    for text in used:
        try:
            taken.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    for candidate in base.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in taken):
            return str(candidate)
    return None


def validate_pool(pool: str, prefix: int) -> str | None:
    """An error message, or None when ``pool`` can be split into ``/prefix`` subnets."""
    try:
        base = ipaddress.ip_network(pool)
    except ValueError:
        return f"{pool!r} is not a network such as 10.213.0.0/16"
    if not base.prefixlen <= prefix <= base.max_prefixlen - 2:
        return f"prefix /{prefix} must be within /{base.prefixlen}../{base.max_prefixlen - 2}"
    return None
