"""The proxy's options: the ``[proxy]`` section of the daemon config, declared once.

The daemon hands ``config.proxy`` to the proxy as it is (no copy field by
field). Fields declared with :func:`setting` are TOML keys of ``[proxy]``; the
others are runtime values (``forwarded_share`` is set per worker process,
patrd/proxy/workers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.model import checks as c
from patrd.model.errors import ConfigError
from patrd.model.listen import Listen
from patrd.model.sections import setting

EVENT_LOOPS = ("uvloop", "asyncio")  # proxy.event_loop


def _workers(value: Any, key: str, _: Path) -> int | None:
    """``proxy.workers``: "auto" (None) or a count >= 0 (0: inside the daemon)."""
    if value == "auto":
        return None
    if not c.is_number(value) or not isinstance(value, int) or not 0 <= value <= 64:
        raise ConfigError(key, 'must be "auto" or an integer from 0 to 64')
    return int(value)


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Listeners, limits and timeouts of the proxy (bytes, seconds); 0 turns a limit off."""

    http_listen: tuple[Listen, ...] = setting(
        (Listen("0.0.0.0", 80),),
        c.listens(empty='must be a non-empty list of "host:port"'),
        "plain-HTTP listeners",
    )
    base_domain: str = setting("localhost", c.domain(), "default URLs are <port>-<name>.<this>")
    drain_timeout_s: float = setting(30.0, c.positive(), "on stop, wait this long for requests")
    max_header_bytes: int = setting(16 * 1024, c.integer(1024), "largest request head → 431")
    max_body_bytes: int = setting(10 * 1024 * 1024, c.integer(0), "largest request body → 413")
    header_timeout_s: float = setting(30.0, c.positive(), "to receive a request head → 408")
    # also: an open websocket with no byte either way
    idle_timeout_s: float = setting(75.0, c.positive(), "keep-alive idle connection → closed")
    # After the head (like nginx's client_body_timeout, proxy_read_timeout,
    # send_timeout); a managed URL may set its own (Route.timeouts).
    body_timeout_s: float = setting(60.0, c.positive(), "between two reads of a body → 408")
    upstream_header_timeout_s: float = setting(
        60.0, c.positive(), "request sent → response head → 504"
    )
    upstream_idle_timeout_s: float = setting(
        60.0, c.positive(), "between two reads of a response body → cut"
    )
    send_timeout_s: float = setting(60.0, c.positive(), "a client not reading its answer → cut")
    rate_limit_rps: float = setting(
        100.0, c.off_or_number(), "requests per second per client IP (IPv6: /64) → 429"
    )
    rate_limit_burst: int = setting(200, c.integer(1), "requests a client may send at once")
    rate_limit_exempt: tuple[str, ...] = setting(
        ("127.0.0.0/8", "::1/128"),
        c.networks(as_text=True),
        "networks never rate limited nor capped per client",
    )
    max_connections: int = setting(10000, c.integer(0), "client connections, all clients → 503")
    max_connections_per_ip: int = setting(256, c.integer(0), "connections per client → 429")
    trusted_proxies: tuple[str, ...] = setting(
        (), c.networks(as_text=True), "peers whose X-Forwarded-For is kept (appended to)"
    )
    # How the proxy runs (patrd/proxy/runtime.py).
    workers: int | None = setting(
        None, _workers, 'worker processes: "auto" (one per CPU) or 0 (inside the daemon)'
    )
    event_loop: str = setting("uvloop", c.choice(EVENT_LOOPS), "uvloop or asyncio")
    # route.hold (patrd/proxy/hold.py): stop-first swaps (volumes).
    pause_timeout_s: float = setting(
        30.0, c.positive(), "a request waits this long for a swapping deployment → 503"
    )
    # Not config keys.
    upstream_connect_timeout_s: float = 5.0
    upstream_idle_pool_size: int = 32  # idle keep-alive connections kept per backend
    # Set by the worker supervisor (patrd/proxy/workers.py): this process gets
    # 1/forwarded_share of a trusted proxy's connections.
    forwarded_share: int = 1
