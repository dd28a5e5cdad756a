"""The routing table: (Host, path) → route. Pure data, no I/O.

A :class:`RoutingTable` is immutable; the server swaps whole tables (one
attribute assignment), so a request always sees one consistent table.

Matching rules:

* the Host header is normalized by :func:`normalize_host` (lowercase, port
  removed, trailing dot removed, IPv6 brackets removed);
* among the routes of that host, the longest ``path_prefix`` that matches on
  a segment boundary wins: ``/api`` matches ``/api`` and ``/api/x`` but not
  ``/apix``; ``/`` matches every path. A trailing slash on a prefix is not
  significant (``/api/`` and ``/api`` are the same prefix).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class RouteStatus(StrEnum):
    """Mirrors the deployment status; only ``RUNNING`` routes are proxied."""

    CREATED = "created"
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    ERRORED = "errored"


@dataclass(frozen=True, slots=True)
class Backend:
    """One ready instance of a deployment, reachable at ``host:port``.

    ``tls``: the connection to it is TLS (a managed URL proxying to an
    ``https://`` origin), verified against the system's CAs for ``host``.
    """

    instance: str
    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """Where requests for ``host`` + ``path_prefix`` go."""

    host: str
    path_prefix: str
    deployment: str
    port: int
    status: RouteStatus
    backends: tuple[Backend, ...]
    # Managed URLs (patrd.model.urls). ``special`` is true when any of the rest is
    # set, so a plain deployment route costs one attribute test per request.
    https_redirect: bool = False  # plain HTTP → 308 to https://host/...
    redirect: str | None = None  # answer with a redirect to this base URL
    redirect_status: int = 308
    upstream_host: str | None = None  # proxy to an outside origin: its Host
    upstream_path: str = ""  # ... and the base path put before the request path
    max_body_bytes: int | None = None  # this URL's request body limit (None: the proxy's)
    # The deployment swaps its only instance (stop-first, volumes): with no
    # backend, new requests wait for the new one (patrd/proxy/hold.py), not 503.
    hold: bool = False
    # This URL's (body, upstream_header, upstream_idle, send) timeouts in
    # seconds (None: the proxy's, ProxyOptions).
    timeouts: tuple[float, float, float, float] | None = None
    special: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        special = self.https_redirect or self.redirect is not None or self.upstream_host is not None
        object.__setattr__(self, "special", special)


# One entry of a host's match list: (prefix without trailing slash, the same
# prefix followed by "/", route). The root prefix is stored as ("", "/", route).
_Entry = tuple[str, str, Route]


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """An immutable set of routes with a host index.

    Build it with :meth:`build`; ``RoutingTable()`` is the empty table.
    """

    routes: tuple[Route, ...] = ()
    _index: Mapping[str, tuple[_Entry, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    # Host → segments of its deepest path prefix (hosts with only "/": absent).
    _depths: Mapping[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        by_host: dict[str, list[_Entry]] = {}
        seen: set[tuple[str, str]] = set()
        for route in self.routes:
            host = normalize_host(route.host)
            prefix = _normalize_prefix(route.path_prefix)
            if (host, prefix) in seen:
                raise ValueError(
                    f"duplicate route for host {host!r} and path prefix {route.path_prefix!r}"
                )
            seen.add((host, prefix))
            by_host.setdefault(host, []).append((prefix, prefix + "/", route))
        index = {
            host: tuple(sorted(entries, key=lambda e: len(e[0]), reverse=True))
            for host, entries in by_host.items()
        }
        # A plain dict (read-only by convention): the lookup is on the hot path.
        object.__setattr__(self, "_index", index)
        depths = {
            host: entries[0][0].count("/") for host, entries in index.items() if entries[0][0]
        }
        object.__setattr__(self, "_depths", depths)

    @classmethod
    def build(cls, routes: Iterable[Route]) -> RoutingTable:
        """Index ``routes``; raise ``ValueError`` on a duplicate (host, path_prefix)."""
        return cls(tuple(routes))

    def match(self, host: str, path: str) -> Route | None:
        """The route for a request's Host header and path, or ``None``."""
        if host in self._index:
            return self.lookup(host, path)
        return self.lookup(normalize_host(host), path)

    def lookup(self, host: str, path: str) -> Route | None:
        """:meth:`match` for a host already normalized (``normalize_host``)."""
        entries = self._index.get(host)
        if entries is None:
            return None
        for prefix, prefix_slash, route in entries:
            if not prefix or path == prefix or path.startswith(prefix_slash):
                return route
        return None

    def prefix_depth(self, host: str) -> int:
        """Segments of the deepest path prefix of ``host`` (normalized); 0: only ``/``."""
        return self._depths.get(host, 0)

    def hosts(self) -> frozenset[str]:
        """Every hostname this table routes (the names that need a certificate)."""
        return frozenset(self._index)

    def backend_keys(self) -> frozenset[tuple[str, int]]:
        """Every (host, port) a route of this table may send requests to."""
        return frozenset((b.host, b.port) for route in self.routes for b in route.backends)

    def __len__(self) -> int:
        return len(self.routes)


def normalize_host(host: str) -> str:
    """Lowercase ``host`` and drop its port and trailing dot.

    ``"Example.COM.:8080"`` → ``"example.com"``; ``"[::1]:80"`` → ``"::1"``.
    A bare IPv6 address (two colons or more, no brackets) is kept whole.
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end != -1 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def redirect_location(base: str, prefix: str, target: str) -> str:
    """Where a redirect route sends ``target`` (the request's path and query).

    The part of the path after the route's ``prefix`` is appended to
    ``base``; the request's query string is kept (after ``base``'s own, if
    it has one): prefix ``/old``, base ``https://new.example/new``, request
    ``/old/a?x=1`` → ``https://new.example/new/a?x=1``.
    """
    path, _, query = target.partition("?")
    prefix = _normalize_prefix(prefix)
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        rest = path[len(prefix) :]
    else:
        rest = path  # the root prefix: the whole path
    base_path, _, base_query = base.partition("?")
    location = base_path.rstrip("/") + rest if rest else base_path
    if location.count("/") < 3:
        location += "/"  # https://host → https://host/
    queries = [q for q in (base_query, query) if q]
    return location + ("?" + "&".join(queries) if queries else "")


def _normalize_prefix(prefix: str) -> str:
    """``"/"`` → ``""``; ``"/api/"`` → ``"/api"``; a missing leading slash is added."""
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix.rstrip("/")
