"""The reverse proxy: asyncio Protocols and httptools (llhttp), no aiohttp on the hot path.

Shape (``README.md`` in this package has the vocabulary):

* :class:`ProxyServer` owns the listeners, the routing table, the backend
  pools and the counters. It stops in order: close listeners → let in-flight
  requests finish → close idle connections → abort the rest.
* ``_Client`` is one accepted connection. It parses requests with
  ``httptools.HttpRequestParser`` into ``_Exchange`` objects and answers them
  in order (pipelined requests wait their turn).
* ``_Upstream`` is one connection to a backend. It parses responses with
  ``httptools.HttpResponseParser`` and streams them to the client.
* ``_Pool`` is one backend (host, port): its idle keep-alive connections and
  the number of requests outstanding on it.

With a warm pool the whole request runs in protocol callbacks: no task, no
future, no timer allocation, no logging. Only opening a new upstream
connection runs a coroutine (``loop.create_connection``). A connection's
timeouts are one deadline in the server's queues (``deadlines.py``).

**Why this module is long** (the one exception to the house's 600 lines,
``tests/unit/test_house.py``): it is the request hot path, and its four
classes are one state machine. ``_Client`` creates ``_Exchange`` objects and
hands them to a ``_Pool``'s ``_Upstream``; the upstream calls back into the
client (``attach``, ``response_complete``, ``retry``, ``start_tunnel``,
deadlines) and both read and write each other's slots on every callback.
Split into modules, they would import each other (a cycle, which the house
forbids) or talk through an interface layer costing a call per callback on
every request. What is not on that path lives beside it already: header
tables (``headers.py``), request targets (``target.py``), limits
(``limits.py``), held requests (``hold.py``), deadlines (``deadlines.py``),
the routing table (``router.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

import httptools
import structlog

from patrd.proxy import failover
from patrd.proxy.deadlines import Deadlines, Queue
from patrd.proxy.headers import (
    H_CONNECTION,
    H_CONTENT_LENGTH,
    H_DROP,
    H_HOST,
    H_PASS,
    H_TRANSFER_ENCODING,
    H_UPGRADE,
    H_XFF,
    H_XFWD,
    REQUEST_HEADERS,
    forwarding_lines,
    request_header_kind,
)
from patrd.proxy.hold import RETRY_AFTER_S, HeldRequests
from patrd.proxy.limits import Limits, Networks, client_key, forwarded_client
from patrd.proxy.options import ProxyOptions
from patrd.proxy.router import (
    Backend,
    Route,
    RouteStatus,
    RoutingTable,
    redirect_location,
)
from patrd.proxy.stats import DeploymentCounters
from patrd.proxy.target import (
    has_encoded_slash,
    join_base,
    needs_normalizing,
    normalize_path,
    parse_host,
    slash_in_route_segments,
)
from patrd.proxy.tls_server import TLSListener

__all__ = ["Listen", "ProxyOptions", "ProxyServer", "Snapshot"]

# A listener: an address to bind, or a socket bound and listening already
# (the worker processes get theirs from the daemon).
Listen = tuple[str, int] | socket.socket


# --- constants ---------------------------------------------------------------

_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS"})
# Request body bytes buffered while the upstream connection opens, before
# the client is paused.
_BODY_BUFFER_HIGH: Final = 64 * 1024
# After an error answer that ends the connection, keep reading (and dropping)
# what the client still sends for this long, so that it reads the answer
# rather than a connection reset.
_LINGER_S: Final = 2.0
# stop(): how long to wait for aborted transports to report connection_lost.
_CLOSE_WAIT_S: Final = 2.0
# Idle upstream connections above upstream_idle_pool_size are closed once they
# have stayed unused this long: a burst wider than the pool does not make the
# proxy close connections that the next burst opens again.
_TRIM_S: Final = 1.0
# Largest response head accepted from a backend (→ 502 beyond).
_MAX_RESPONSE_HEAD: Final = 64 * 1024

# Client connection modes.
_HTTP: Final = 0  # parsing requests
_NOPARSE: Final = 1  # answering what was parsed; further input is dropped
_UPGRADING: Final = 2  # websocket request sent upstream, waiting for its 101
_TUNNEL: Final = 3  # websocket established: bytes piped both ways
_LINGER: Final = 4  # error answer written, input dropped until close
_CLOSED: Final = 5

# Why the client's reads are paused (bit mask).
_P_PIPELINE: Final = 1  # a pipelined request waits for the one in flight
_P_UPSTREAM_FULL: Final = 2  # the upstream's write buffer is above its high mark
_P_BUFFERING: Final = 4  # body or websocket bytes buffered while the upstream connects

# Header kinds (patrd/proxy/headers.py: the request policy).
_H_PASS: Final = H_PASS
_H_HOST: Final = H_HOST
_H_CONTENT_LENGTH: Final = H_CONTENT_LENGTH
_H_TRANSFER_ENCODING: Final = H_TRANSFER_ENCODING
_H_CONNECTION: Final = H_CONNECTION
_H_UPGRADE: Final = H_UPGRADE
_H_DROP: Final = H_DROP
_H_XFF: Final = H_XFF
_H_XFWD: Final = H_XFWD
_REQUEST_HEADERS: Final = REQUEST_HEADERS
_RESPONSE_HEADERS: Final[dict[bytes, int]] = {
    b"content-length": _H_CONTENT_LENGTH,
    b"transfer-encoding": _H_TRANSFER_ENCODING,
    b"connection": _H_CONNECTION,
    b"upgrade": _H_UPGRADE,
    b"keep-alive": _H_DROP,
    b"proxy-connection": _H_DROP,
    b"te": _H_DROP,
    b"trailer": _H_DROP,
}
# The same lookups by the spelling on the wire, for common headers: most
# headers then cost one dict lookup and no lower() (_H_PASS: forwarded as is).
_COMMON_PASS: Final = (
    b"Accept", b"Accept-Encoding", b"Accept-Language", b"Accept-Ranges", b"Age",
    b"Authorization", b"Cache-Control", b"Content-Encoding", b"Content-Type", b"Cookie",
    b"Date", b"ETag", b"Expires", b"If-Modified-Since", b"If-None-Match", b"Last-Modified",
    b"Location", b"Origin", b"Referer", b"Server", b"Set-Cookie", b"User-Agent", b"Vary",
)  # fmt: skip


def _by_spelling(kinds: dict[bytes, int]) -> dict[bytes, int]:
    """``kinds`` under its names as usually spelled too, plus the common pass-through ones."""
    exact = dict.fromkeys(_COMMON_PASS, _H_PASS)
    for name, kind in kinds.items():
        exact[name] = kind
        exact[b"-".join(part.capitalize() for part in name.split(b"-"))] = kind
    if b"te" in kinds:
        exact[b"TE"] = kinds[b"te"]
    return exact


_REQUEST_EXACT: Final = _by_spelling(_REQUEST_HEADERS)
_RESPONSE_EXACT: Final = _by_spelling(_RESPONSE_HEADERS)
# Connection header options that are not header names.
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
# Connection header values naming no header, as sent (checked before parsing).
_PLAIN_CONNECTION: Final = frozenset(
    {b"close", b"keep-alive", b"upgrade", b"Close", b"Keep-Alive", b"Upgrade"}
)
# Host header → _HostLines, or _BAD_HOST (bounded: cleared when full).
_HOST_CACHE_MAX: Final = 4096
# (hostname for the routing table, Host value forwarded, its "Host: …" line,
# its "X-Forwarded-Host: …" line): the lines are made once per Host value.
_HostLines = tuple[str, bytes, bytes, bytes]
_NO_HOST: Final[_HostLines] = ("", b"", b"", b"")  # HTTP/1.0 without Host: none forwarded
_BAD_HOST: Final = _NO_HOST  # cached for an invalid Host value: 400 (the empty name tells)


def _host_lines(raw: bytes) -> _HostLines:
    parsed = parse_host(raw)
    if parsed is None:
        return _BAD_HOST
    name, value = parsed
    return name, value, b"Host: %b\r\n" % value, b"X-Forwarded-Host: %b\r\n" % value


# HTTP-01 challenges (RFC 8555 §8.3) are answered on the plain-HTTP listeners
# from the token map, before routing and before any https redirect.
_ACME_PREFIX: Final = b"/.well-known/acme-challenge/"

_REASONS: Final[dict[int, bytes]] = {
    200: b"OK",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_TEXTS: Final[dict[int, str]] = {
    400: "bad request",
    404: "no deployment serves this host",
    405: "method not allowed",
    408: "request timeout: the request body stopped arriving",
    413: "request body too large",
    429: "too many requests: slow down",
    431: "request header fields too large",
    502: "bad gateway: the instance did not answer",
    504: "gateway timeout: the instance did not answer in time",
}
# Timeouts after the head, counted by kind (Snapshot.timeouts, /metrics).
TIMEOUT_KINDS: Final = ("body", "upstream_header", "upstream_idle", "send", "websocket_idle")
_T_BODY: Final = 0
_T_UPSTREAM_HEADER: Final = 1
_T_UPSTREAM_IDLE: Final = 2
_T_SEND: Final = 3
_T_WEBSOCKET: Final = 4
# Answers to connections refused by a connection cap (before any request is read).
_REFUSED: Final[dict[int, bytes]] = {
    429: b"too many connections from your address\n",
    503: b"server busy: too many connections\n",
}


class _Stop(Exception):
    """Raised in a parser callback to stop parsing the current input."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What :meth:`ProxyServer.snapshot` reports."""

    outstanding: dict[tuple[str, int], int]  # backends with requests on them now
    active_requests: int
    limited_requests: int
    refused_connections: int
    deployment_stats: dict[str, DeploymentCounters]
    timeouts: dict[str, int]  # TIMEOUT_KINDS → how many fired


# --- the server --------------------------------------------------------------


class ProxyServer:
    """HTTP/1.1 reverse proxy in front of the deployments' instances."""

    # Above this many open client connections, an idle one drops its request
    # parser (about 0.9 KB; a new one costs about 1 µs per request after an
    # idle spell): memory matters when connections are many, CPU when few.
    keep_parsers_upto = 256

    def __init__(
        self,
        options: ProxyOptions,
        table: RoutingTable | None = None,
        challenges: dict[str, bytes] | None = None,
        has_certificate: Callable[[str], bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._options = options
        self._ssl_context = ssl_context  # of the HTTPS listeners, unless start() gets one
        self._table = table if table is not None else RoutingTable()
        self._body_ceiling = _body_ceiling(options, self._table)
        # ACME HTTP-01 token → key authorization (patrd.tls); None: not answered.
        self._challenges = challenges
        self._https_port: int | None = None  # where plain-HTTP requests are redirected
        # Plain HTTP is redirected to HTTPS only for hosts that have a certificate.
        self._has_certificate = has_certificate
        self._upstream_ssl: ssl.SSLContext | None = None  # for https:// proxy targets
        self.https_bound: list[tuple[str, int]] = []
        self._log = structlog.get_logger("patrd.proxy")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.Server] = []
        self._tls_listeners: list[TLSListener] = []  # TLS is ours (tls_server.py), not uvloop's
        self._deadlines: Deadlines | None = None  # the clients' timeouts (deadlines.py)
        self._pools: dict[tuple[str, int], _Pool] = {}
        # Backends whose connection failed → loop time until which new
        # requests avoid them (failover.py). Empty on the happy path.
        self._down: dict[tuple[str, int], float] = {}
        self._hosts: dict[bytes, _HostLines] = {}  # Host header → parsed (_BAD_HOST)
        self._peers: dict[bytes, dict[str, _Peer]] = {}  # scheme → address → shared (_peer_of)
        self._parsers_dropped_at = -_PARSER_SWEEP_S  # loop time (_drop_idle_parsers)
        # (body, upstream header, upstream idle, send) of routes without their own.
        self._timeouts = (
            options.body_timeout_s,
            options.upstream_header_timeout_s,
            options.upstream_idle_timeout_s,
            options.send_timeout_s,
        )
        # The client connections (a dict: at thousands, half a set's bytes per entry).
        self._clients: dict[_Client, None] = {}
        self._upstreams: set[_Upstream] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        self._rr = 0
        self._open = 0  # transports (client and upstream) not yet lost
        self._limits = Limits(options)
        self._trusted = Networks(options.trusted_proxies)
        self.limited_requests = 0  # answered 429 by the rate limit
        self.refused_connections = 0  # closed at once by a connection cap
        self._fired = [0] * len(TIMEOUT_KINDS)  # timeouts after the head, by kind
        # Requests per deployment by status class and latency (patrd/proxy/stats.py).
        self.deployment_stats: dict[str, DeploymentCounters] = {}
        self._held = HeldRequests(options.pause_timeout_s)  # route.hold: patrd/proxy/hold.py
        self._draining = False
        self._drained: asyncio.Event | None = None
        self._all_closed: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None

    # --- public API ---

    @property
    def active_requests(self) -> int:
        """Requests received and not yet fully answered (open websockets excluded)."""
        return self._active

    def outstanding(self, host: str, port: int) -> int:
        """Requests and websockets currently using backend ``host:port``."""
        pool = self._pools.get((host, port))
        return pool.outstanding if pool is not None else 0

    def snapshot(self) -> Snapshot:
        """The counters, as plain data (the worker processes report them to the daemon)."""
        return Snapshot(
            outstanding={
                key: pool.outstanding for key, pool in self._pools.items() if pool.outstanding
            },
            active_requests=self._active,
            limited_requests=self.limited_requests,
            refused_connections=self.refused_connections,
            deployment_stats=self.deployment_stats,
            timeouts=self.timeouts,
        )

    @property
    def timeouts(self) -> dict[str, int]:
        """Timeouts after the head that fired, by kind (:data:`TIMEOUT_KINDS`)."""
        return dict(zip(TIMEOUT_KINDS, self._fired, strict=True))

    async def refresh_stats(self) -> None:
        """The counters above are current already (worker processes: see workers.py)."""

    def set_table(self, table: RoutingTable) -> None:
        """Swap the routing table; close idle connections of backends that left it."""
        self._body_ceiling = _body_ceiling(self._options, table)
        self._table = table
        live = table.backend_keys()
        for key in [key for key in self._down if key not in live]:
            del self._down[key]
        for key, pool in list(self._pools.items()):
            if key in live:
                pool.retired = False
                continue
            pool.retired = True
            pool.close_idle()
            if not pool.outstanding:
                del self._pools[key]
        if self._held:
            self._held.release(table)

    async def start(
        self,
        listens: Sequence[Listen],
        tls_listens: Sequence[Listen] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> list[tuple[str, int]]:
        """Listen on each (host, port); return the bound addresses (port 0 → real port).

        ``tls_listens`` are HTTPS listeners with ``ssl_context`` (default: the
        one given to the constructor; its SNI callback picks the certificate
        per handshake); their bound addresses are in :attr:`https_bound`. A
        listener may also be a socket already bound and listening. An
        ``OSError`` from binding propagates, after the listeners already
        opened are closed again.
        """
        if self._servers or self._stopped is not None:
            raise RuntimeError("the proxy was already started")
        ssl_context = ssl_context or self._ssl_context
        if tls_listens and ssl_context is None:
            raise ValueError("HTTPS listeners need an ssl_context")
        loop = self._loop = asyncio.get_running_loop()
        self._deadlines = Deadlines(loop)
        bound: list[tuple[str, int]] = []
        try:
            for scheme, group in ((b"http", listens), (b"https", tls_listens)):
                for listen in group:
                    # The listener's address-less peer: its clients' until connection_made.
                    factory: Callable[[], asyncio.Protocol] = functools.partial(
                        _Client, self, _Peer(self, scheme, "")
                    )
                    if scheme == b"https":
                        assert ssl_context is not None
                        listener = TLSListener(
                            ssl_context,
                            factory,
                            self._deadlines,
                            self._options.header_timeout_s,
                            self._options.max_connections,
                        )
                        self._tls_listeners.append(listener)
                        factory = listener
                    if isinstance(listen, socket.socket):
                        server = await loop.create_server(factory, sock=listen, backlog=1024)
                    else:
                        server = await loop.create_server(
                            factory, listen[0], listen[1], reuse_address=True, backlog=1024
                        )
                    self._servers.append(server)
                    for sock in server.sockets:
                        name = sock.getsockname()
                        address = (str(name[0]), int(name[1]))
                        (bound if scheme == b"http" else self.https_bound).append(address)
            if self.https_bound:
                self._https_port = self.https_bound[0][1]
        except BaseException:
            for server in self._servers:
                server.close()
            self._servers.clear()
            raise
        self._log.info(
            "proxy.started",
            listens=[f"{h}:{p}" for h, p in bound],
            https=[f"{h}:{p}" for h, p in self.https_bound],
            event_loop=type(loop).__module__.partition(".")[0],  # uvloop or asyncio
        )
        return bound

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the API
        """Drain, then stop. A second call waits for the first one to finish."""
        if self._stopped is not None:
            await self._stopped.wait()
            return
        self._stopped = asyncio.Event()
        if timeout is None:
            timeout = self._options.drain_timeout_s
        self._draining = True
        self._held.expire_all()
        for server in self._servers:
            server.close()
        for listener in self._tls_listeners:
            listener.abort_handshakes()
        for client in list(self._clients):
            client.close_if_idle()
        if self._active > 0:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                self._log.warning("proxy.drain_timeout", active_requests=self._active)
        for client in list(self._clients):
            client.abort()
        for pool in self._pools.values():
            pool.close_idle()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._upstreams):
            conn.abort()
        if self._open > 0:
            self._all_closed = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), _CLOSE_WAIT_S)
            except TimeoutError:
                self._log.warning("proxy.close_timeout", open_connections=self._open)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._deadlines is not None:
            self._deadlines.close()
        self._log.info("proxy.stopped")
        self._stopped.set()

    # --- used by the protocols ---

    def _pick(self, backends: tuple[Backend, ...]) -> _Pool:
        """The backend with the fewest outstanding requests; ties go round-robin.
        Backends marked down are left out while others are up (failover.py)."""
        if self._down:
            assert self._loop is not None
            failover.expire(self._down, self._loop.time())
            backends = failover.usable(backends, self._down)
        pools = self._pools
        n = len(backends)
        start = 0
        if n > 1:
            start = self._rr = (self._rr + 1) % n
        best: _Pool | None = None
        for i in range(n):
            backend = backends[(start + i) % n]
            key = (backend.host, backend.port)
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = _Pool(self, key, backend.tls)
            if best is None or pool.outstanding < best.outstanding:
                best = pool
                if not pool.outstanding:
                    break
        assert best is not None
        return best

    def _request_done(self) -> None:
        self._active -= 1
        if not self._active and self._drained is not None:
            self._drained.set()

    def _failover(self, ex: _Exchange, pool: _Pool, exc: BaseException) -> bool:
        """Opening a connection to ``pool`` for ``ex`` failed: mark it down and,
        if the failure says no byte reached it, send ``ex`` to another instance.
        False: answer as before (502)."""
        if not failover.not_reached(exc):
            return False
        assert self._loop is not None
        if pool.key not in self._down:
            host, port = pool.key
            self._log.warning("proxy.backend_down", backend=f"{host}:{port}", error=repr(exc))
        self._down[pool.key] = self._loop.time() + failover.DOWN_S
        if ex.finished or ex.response_done or ex.pool is not pool:
            return False
        tried = ex.tried
        if tried is None:
            tried = ex.tried = []
        tried.append(pool.key)
        backends = failover.next_backends(ex.backends, self._down, tried)
        if not backends:
            return False
        pool.unpin()
        ex.pool = nxt = self._pick(backends)
        nxt.outstanding += 1
        self._connect(nxt, ex)
        return True

    def _transport_lost(self) -> None:
        self._open -= 1
        if not self._open and self._all_closed is not None:
            self._all_closed.set()

    def _connect(self, pool: _Pool, ex: _Exchange) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._open_upstream(pool, ex))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_upstream(self, pool: _Pool, ex: _Exchange) -> None:
        loop = asyncio.get_running_loop()
        host, port = pool.key
        tls = None
        if pool.tls:
            if self._upstream_ssl is None:
                self._upstream_ssl = ssl.create_default_context()
            tls = self._upstream_ssl
        try:
            async with asyncio.timeout(self._options.upstream_connect_timeout_s):
                _, conn = await loop.create_connection(
                    functools.partial(_Upstream, self, pool),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            if not self._failover(ex, pool, exc):
                ex.client.upstream_failed(ex)
            return
        except Exception:
            self._log.exception("proxy.connect_failed", backend=f"{host}:{port}")
            ex.client.upstream_failed(ex)
            return
        if ex.response_done or ex.finished:
            # Answered or gone meanwhile: keep the fresh connection for later.
            pool.release(conn, reusable=not ex.websocket)
            return
        ex.client.attach(ex, conn, reused=False)


class _Pool:
    """One backend: its idle keep-alive connections and outstanding requests.

    ``idle`` is a stack: the most recently used connection is taken first, so
    the bottom of the stack holds the connections nobody needed lately.
    """

    __slots__ = ("idle", "key", "low", "outstanding", "retired", "server", "tls", "trim_timer")

    def __init__(self, server: ProxyServer, key: tuple[str, int], tls: bool = False) -> None:
        self.server = server
        self.key = key
        self.tls = tls  # connect with TLS (an https:// proxy target)
        self.idle: list[_Upstream] = []
        self.low = 0  # fewest idle connections seen since the trim timer was armed
        self.trim_timer: asyncio.TimerHandle | None = None
        self.outstanding = 0
        self.retired = False  # no longer in the routing table

    def take(self) -> _Upstream | None:
        idle = self.idle
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            conn.pooled = False
            if len(idle) < self.low:
                self.low = len(idle)
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                return conn
        return None

    def release(self, conn: _Upstream, reusable: bool) -> None:
        conn.exchange = None
        conn.out = None
        transport = conn.transport
        server = self.server
        if (
            reusable
            and transport is not None
            and not transport.is_closing()
            and not self.retired
            and not server._draining
        ):
            transport.resume_reading()  # idle: notice when the backend closes it
            conn.pooled = True
            self.idle.append(conn)
            if (
                len(self.idle) > server._options.upstream_idle_pool_size
                and self.trim_timer is None
                and server._loop is not None
            ):
                self.low = len(self.idle)
                self.trim_timer = server._loop.call_later(_TRIM_S, self._trim)
        else:
            conn.close()

    def _trim(self) -> None:
        """Close surplus idle connections that stayed unused since the last trim."""
        self.trim_timer = None
        idle = self.idle
        surplus = len(idle) - self.server._options.upstream_idle_pool_size
        if surplus <= 0:
            return
        unused = min(surplus, self.low, len(idle))
        if unused > 0:
            stale = idle[:unused]
            del idle[:unused]
            for conn in stale:
                conn.pooled = False
                conn.close()
        self.low = len(idle)
        if len(idle) > self.server._options.upstream_idle_pool_size and self.server._loop:
            self.trim_timer = self.server._loop.call_later(_TRIM_S, self._trim)

    def close_idle(self) -> None:
        if self.trim_timer is not None:
            self.trim_timer.cancel()
            self.trim_timer = None
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.pooled = False
            conn.close()

    def unpin(self) -> None:
        self.outstanding -= 1
        if self.retired and not self.outstanding:
            pools = self.server._pools
            if pools.get(self.key) is self:
                del pools[self.key]


def _body_ceiling(options: ProxyOptions, table: RoutingTable) -> int:
    """Before routing, a body may be as large as the largest per-URL limit;
    once routed, its own URL's limit (or the proxy's) applies."""
    return max([options.max_body_bytes, *(r.max_body_bytes or 0 for r in table.routes)])


class _Exchange:
    """One request of a client connection and the state of its answer."""

    __slots__ = (
        "backends",
        "body_buffer",
        "body_buffered",
        "body_limit",
        "body_received",
        "body_sent",
        "chunked",
        "client",
        "close_after",
        "connection",
        "content_length",
        "counted",
        "discard",
        "error",
        "finished",
        "head",
        "head_size",
        "headers_done",
        "host",
        "host_lines",
        "http11",
        "is_head",
        "keep_alive",
        "method",
        "parts",
        "pool",
        "request_done",
        "response_done",
        "response_started",
        "retried",
        "stats",
        "status",
        "t0",
        "timeouts",
        "tried",
        "tunnel_buffer",
        "upgrade",
        "upstream",
        "url",
        "websocket",
        "xf_host",
        "xf_proto",
        "xff",
    )

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.method = b""
        self.url = b""
        self.parts: list[bytes] = []  # forwarded headers: name, b": ", value, b"\r\n", ...
        self.host: bytes | None = None
        self.host_lines = _NO_HOST  # the Host forwarded upstream (validated, normalized)
        self.timeouts = client._server._timeouts  # the route's, once routed
        self.connection: list[bytes] | None = None  # values of Connection headers
        self.upgrade: bytes | None = None
        self.content_length: int | None = None
        self.body_limit = 0  # set when routed; 0: the server's ceiling until then
        self.chunked = False
        self.error = 0  # status of an error answer decided while parsing
        self.http11 = True
        self.keep_alive = True
        self.is_head = False
        self.websocket = False
        self.headers_done = False
        self.request_done = False
        self.body_received = 0
        self.body_buffer: list[bytes] | None = None
        self.body_buffered = 0
        self.body_sent = False
        self.discard = False  # the rest of the request body is read and dropped
        self.head = b""
        self.head_size = 0  # bytes of its head so far, from the parser's callbacks
        self.pool: _Pool | None = None  # the backend, while this exchange counts on it
        self.backends: tuple[Backend, ...] = ()  # the routed deployment's (failover)
        self.tried: list[tuple[str, int]] | None = None  # backends that failed to connect
        self.upstream: _Upstream | None = None
        self.retried = False
        self.response_started = False
        self.response_done = False
        self.close_after = False
        self.counted = False  # counted in ProxyServer.active_requests
        self.finished = False
        self.tunnel_buffer: list[bytes] | None = None
        self.xff: bytes | None = None  # X-Forwarded-For from a trusted proxy
        self.xf_proto = False  # a trusted proxy sent X-Forwarded-Proto
        self.xf_host = False  # a trusted proxy sent X-Forwarded-Host
        self.stats: DeploymentCounters | None = None  # the routed deployment's counters
        self.status = 0  # status line sent to the client
        self.t0 = 0.0  # loop time when routed (latency histogram)


# --- client side -------------------------------------------------------------


class _Peer:
    """What a client connection knows of its peer and listener, shared by its connections.

    Fixed for a (scheme, address) in one server, so the server's connections
    from one address share one (:func:`_peer_of`): an idle connection keeps a
    reference, not its own address string and forwarding lines (about 180
    bytes each).
    """

    __slots__ = (
        "challenges",
        "deadlines",
        "exempt",
        "forwarded",
        "ip",
        "key",
        "loop",
        "rate_key",
        "scheme",
        "trusted",
    )

    def __init__(self, server: ProxyServer, scheme: bytes, ip: str) -> None:
        deadlines = server._deadlines
        assert deadlines is not None, "the server is started"
        # The server's, here rather than in a slot of each client (8 bytes each).
        self.deadlines = deadlines  # the clients' timeouts (deadlines.py)
        self.loop = asyncio.get_running_loop()
        self.scheme = scheme
        # ACME HTTP-01 tokens, answered on plain HTTP only.
        self.challenges = server._challenges if scheme == b"http" else None
        self.ip = ip  # the peer's address
        # X-Forwarded-For/-Proto and X-Real-IP lines of its requests.
        self.forwarded = forwarding_lines(ip.encode("ascii", "replace"), None, scheme, None)
        self.trusted = bool(server._trusted) and ip in server._trusted  # proxy.trusted_proxies
        self.exempt = self.trusted or server._limits.exempt(ip)  # no per-client limits
        self.key = client_key(ip)  # patrd.proxy.limits.client_key
        self.rate_key = None if self.exempt else self.key  # rate-limit key; None: not limited


# Addresses remembered per server and scheme (cleared when full: connections keep theirs).
_PEER_CACHE_MAX: Final = 4096


def _peer_of(server: ProxyServer, scheme: bytes, ip: str) -> _Peer:
    """The shared :class:`_Peer` of address ``ip`` on a ``scheme`` listener of ``server``."""
    peers = server._peers.get(scheme)
    if peers is None:
        peers = server._peers[scheme] = {}
    # Keyed by the address alone: a (scheme, address) tuple key would cost 64
    # bytes per address.
    peer = peers.get(ip)
    if peer is None:
        if len(peers) >= _PEER_CACHE_MAX:
            peers.clear()
        peer = peers[ip] = _Peer(server, scheme, ip)
    return peer


# Idle clients that kept their parser drop it when the server grows past
# keep_parsers_upto, at most this often (a server hovering there pays one pass
# over keep_parsers_upto clients per this many seconds, not per connection).
_PARSER_SWEEP_S: Final = 1.0


def _drop_idle_parsers(server: ProxyServer) -> None:
    """The server holds more than ``keep_parsers_upto`` clients now: the idle ones that
    kept their parser (they went idle below it) drop it, as they would on going idle."""
    deadlines = server._deadlines
    if deadlines is None:
        return
    now = deadlines.now()
    if now < server._parsers_dropped_at + _PARSER_SWEEP_S:
        return
    server._parsers_dropped_at = now
    for client in server._clients:
        if (
            client._parser is not None
            and client._mode == _HTTP
            and client._active is None
            and client._parsing is None
            and not client._queue
            and not client._feeding
        ):
            client._parser = None


class _Client(asyncio.Protocol):
    """One client connection: parse requests, dispatch them, relay the answers.

    An idle keep-alive connection is what most of them are, most of the time,
    so what it keeps is kept small (issue 20): no parser (``keep_parsers_upto``),
    no exchange, no queue, its deadline in the server's queues, and what it
    knows of its peer shared with the peer's other connections (``_Peer``).
    """

    __slots__ = (
        "_active",
        "_admitted",
        "_advancing",
        "_eof",
        "_feeding",
        "_head_timer",
        "_in_head",
        "_mode",
        "_options",
        "_parser",
        "_parsing",
        "_paused",
        "_peer",
        "_queue",
        "_raw_head",
        "_raw_left",
        "_server",
        "_write_paused",
        "deadline_queue",
        "transport",
    )

    def __init__(self, server: ProxyServer, listener: _Peer) -> None:
        self._server = server
        self._options = server._options
        # The peer's address is known in connection_made; until then, the
        # listener's peer without one (made once per listener, not looked up
        # per connection).
        self._peer = listener
        # Made for a request, dropped while the connection idles (``_finish``)
        # when the server holds many (``keep_parsers_upto``): about 0.9 KB (the
        # parser, llhttp's state, six bound callbacks) per idle connection.
        self._parser: httptools.HttpRequestParser | None = None
        self._feeding = False  # inside the parser's feed_data (its callbacks)
        self.transport: asyncio.Transport | None = None
        self._mode = _HTTP
        self._parsing: _Exchange | None = None  # the request the parser is filling
        self._active: _Exchange | None = None  # the request being answered
        self._queue: deque[_Exchange] | None = None  # pipelined requests waiting
        self._advancing = False
        self._paused = 0  # _P_* bits
        self._write_paused = False
        self._eof = False
        self._raw_head = 0  # bytes received while in a request head (guard)
        self._raw_left = 0  # body bytes of an upgrade request, which llhttp skips
        self._in_head = True
        self._head_timer = False
        self.deadline_queue: Queue | None = None  # kept by Deadlines (deadlines.py)
        self._admitted = False  # counted by the connection caps

    # --- asyncio callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        server = self._server
        server._open += 1
        server._clients[self] = None
        if len(server._clients) == server.keep_parsers_upto + 1:
            _drop_idle_parsers(server)
        if server._draining:
            self._mode = _CLOSED
            transport.close()
            return
        address = transport.get_extra_info("peername")
        ip = str(address[0]) if isinstance(address, tuple) else ""
        peer = self._peer = _peer_of(server, self._peer.scheme, ip)
        admission = server._limits.admit(peer.key, peer.exempt)
        if admission:
            self._refuse(admission)
            return
        self._admitted = True
        self._head_timer = True
        self._set_deadline(self._options.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode == _TUNNEL:
            ex = self._active
            if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
                ex.upstream.transport.write(data)
            self._set_deadline(self._options.idle_timeout_s)
            return
        if mode == _UPGRADING:
            ex = self._active
            if ex is not None:
                if ex.tunnel_buffer is None:
                    ex.tunnel_buffer = []
                ex.tunnel_buffer.append(data)
                self._pause_reading(_P_BUFFERING)
            return
        if mode != _HTTP:
            return  # linger, noparse, closed: drop
        if self._raw_left:
            data = self._take_raw_body(data)
            if not data:
                return
        if self._in_head:
            self._raw_head += len(data)
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        self._feeding = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._feeding = False
            self._on_upgrade(data[int(exc.args[0]) :])
            return
        except httptools.HttpParserError as exc:
            self._feeding = False
            if self._mode == _HTTP:
                self._on_parse_error(exc)
            return
        self._feeding = False
        parsing = self._parsing
        if parsing is None:
            if (
                self._active is None
                and self._mode == _HTTP
                and not self._queue
                and len(self._server._clients) > self._server.keep_parsers_upto
            ):
                self._parser = None  # answered within this read: idle again
            return
        if self._in_head:
            # A request head split over reads: bound its size and its time.
            if self._raw_head > self._options.max_header_bytes:
                self._on_parse_error(None, 431)
            elif not self._head_timer:
                self._head_timer = True
                self._set_deadline(self._options.header_timeout_s)
        elif self._mode == _HTTP:
            self._set_deadline(parsing.timeouts[_T_BODY])  # a body split over reads

    def eof_received(self) -> bool:
        ex = self._active
        if (
            self._mode in (_HTTP, _NOPARSE)
            and ex is not None
            and ex.request_done
            and self._parsing is None
        ):
            # The client half-closed after its request: answer, then close.
            self._eof = True
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        tunnel = self._mode == _TUNNEL
        self._mode = _CLOSED
        # The parser holds bound methods of this client: a reference cycle that
        # only the cyclic GC would free, with the TLS connection and its BIOs
        # (11 objects per connection; their gen-0 collections cost more CPU
        # than the rest of connection_lost). Dropped, they go now.
        self._parser = None
        self._peer.deadlines.clear(self)
        server = self._server
        server._clients.pop(self, None)
        server._transport_lost()
        if self._admitted:
            self._admitted = False
            server._limits.release(self._peer.key, self._peer.exempt)
        if self._active is None and not self._queue:
            self._parsing = None
            return  # nothing in flight: no list to build (most connections)
        exchanges: list[_Exchange] = []
        if self._active is not None:
            exchanges.append(self._active)
        if self._queue:
            exchanges.extend(self._queue)
            self._queue.clear()
        self._active = None
        self._parsing = None
        for ex in exchanges:
            self._drop_upstream(ex, graceful=tunnel)
            ex.response_done = True
            self._finish_counters(ex)

    def pause_writing(self) -> None:
        self._write_paused = True
        ex = self._active
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.pause_reading()
        if ex is not None and self._mode != _TUNNEL:
            self._set_deadline(ex.timeouts[_T_SEND])  # the client must read its answer

    def resume_writing(self) -> None:
        self._write_paused = False
        ex = self._active
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()
            if self._mode != _TUNNEL and ex.response_started:
                self._set_deadline(ex.timeouts[_T_UPSTREAM_IDLE])

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._parsing = _Exchange(self)
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        ex = self._parsing
        assert ex is not None
        ex.url += url
        ex.head_size += len(url)
        if ex.head_size > self._options.max_header_bytes:
            self._on_parse_error(None, 431)
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self._parsing
        assert ex is not None
        ex.head_size += len(name) + len(value) + 4
        if ex.head_size > self._options.max_header_bytes:
            self._on_parse_error(None, 400 if ex.headers_done else 431)
            raise _Stop
        if ex.headers_done:
            return  # a trailer of a chunked body: dropped
        kind = _REQUEST_EXACT.get(name)
        if kind is None:
            kind = request_header_kind(name)  # patrd/proxy/headers.py: the policy
        if kind == _H_PASS:
            ex.parts += (name, b": ", value, b"\r\n")
        elif kind == _H_HOST:
            if ex.host is not None:
                ex.error = 400
            ex.host = value  # forwarded validated and normalized (_request_head)
        elif kind == _H_CONTENT_LENGTH:
            # llhttp refuses duplicates and Content-Length with Transfer-Encoding
            # already; checked again here because it is cheap.
            if ex.content_length is not None or ex.chunked:
                ex.error = 400
            ex.content_length = int(value)
        elif kind == _H_TRANSFER_ENCODING:
            # Only plain "chunked" is forwarded (it is re-encoded); other
            # codings would be lost on the way.
            if ex.content_length is not None or value.strip().lower() != b"chunked":
                ex.error = 400
            ex.chunked = True
        elif kind == _H_CONNECTION:
            if ex.connection is None:
                ex.connection = []
            ex.connection.append(value)
        elif kind == _H_UPGRADE:
            ex.upgrade = value
        elif kind == _H_XFF:
            if self._peer.trusted:
                ex.xff = value if ex.xff is None else ex.xff + b", " + value
        elif kind == _H_XFWD and self._peer.trusted:
            ex.parts += (name, b": ", value, b"\r\n")
            if name.lower() == b"x-forwarded-proto":
                ex.xf_proto = True
            else:
                ex.xf_host = True

    def on_headers_complete(self) -> None:
        ex = self._parsing
        assert ex is not None
        parser = self._parser
        assert parser is not None  # in its own callback
        ex.headers_done = True
        self._in_head = False
        self._raw_head = 0
        self._head_timer = False
        self._peer.deadlines.clear(self)
        ex.method = method = parser.get_method()
        ex.is_head = method == b"HEAD"
        ex.http11 = parser.get_http_version() == "1.1"
        ex.keep_alive = parser.should_keep_alive()
        if ex.connection is not None:
            ex.parts = _without_named(ex.parts, ex.connection)
        if parser.should_upgrade():
            if method == b"CONNECT":
                ex.error = ex.error or 405
            elif ex.upgrade is not None and ex.upgrade.strip().lower() == b"websocket":
                if ex.chunked or ex.content_length:
                    ex.error = ex.error or 400
                else:
                    ex.websocket = True
            elif ex.chunked:
                ex.error = ex.error or 400  # llhttp skips an upgrade's body; not de-chunked here
            elif ex.content_length and not ex.error:
                # Any other upgrade (h2c...) is proxied as plain HTTP without
                # its Upgrade header; llhttp skips the body, data_received
                # reads it.
                self._raw_left = ex.content_length
        if ex.host is None and ex.http11:
            ex.error = ex.error or 400
        if (ex.content_length or 0) > self._server._body_ceiling:
            ex.error = ex.error or 413
        if self._active is None:
            self._active = ex
            self._dispatch(ex)
        else:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(ex)
            self._pause_reading(_P_PIPELINE)
            if ex.error:
                self._mode = _NOPARSE  # answered in turn; nothing after it is read
        if self._mode != _HTTP:
            raise _Stop
        if ex.chunked or ex.content_length:
            self._set_deadline(ex.timeouts[_T_BODY])  # re-armed by each read of the body

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        assert ex is not None
        ex.body_received += len(body)
        if ex.body_received > (ex.body_limit or self._server._body_ceiling):
            self._body_too_large(ex)
            raise _Stop
        if ex.discard:
            return
        if ex.chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self._send_body(ex, body)

    def on_message_complete(self) -> None:
        if self._raw_left:
            return  # completed by _take_raw_body
        self._request_complete()

    def _request_complete(self) -> None:
        ex = self._parsing
        assert ex is not None
        self._parsing = None
        self._in_head = True
        ex.request_done = True
        if ex.chunked and not ex.discard:
            self._send_body(ex, b"0\r\n\r\n")
        if ex is self._active:
            if ex.response_done:
                self._finish(ex)
            elif ex.pool is not None and not ex.response_started:
                self._set_deadline(ex.timeouts[_T_UPSTREAM_HEADER])  # the upstream's turn

    def _take_raw_body(self, data: bytes) -> bytes:
        """Feed the Content-Length body of a non-websocket upgrade request."""
        n = min(len(data), self._raw_left)
        self._raw_left -= n
        try:
            self.on_body(data[:n])
            if not self._raw_left:
                self._request_complete()
        except _Stop:
            return b""
        return data[n:] if self._mode == _HTTP else b""

    # --- dispatch ---

    def _dispatch(self, ex: _Exchange) -> None:
        server = self._server
        server._active += 1
        ex.counted = True
        if ex.error:
            self._local(ex, ex.error, close=True)
            return
        limits = server._limits
        if limits.rate_limited:
            peer = self._peer
            key = self._forwarded_key(ex) if peer.trusted else peer.rate_key
            if key is not None:
                wait = limits.retry_after(key, peer.loop.time(), peer.trusted)
                if wait:
                    server.limited_requests += 1
                    self._local(ex, 429, headers=b"Retry-After: %d\r\n" % wait)
                    return
        url = ex.url
        if url[:1] == b"/":
            path = url.partition(b"?")[0]
        elif url == b"*" and ex.method == b"OPTIONS":
            path = b"/"
        elif not self._absolute_form(ex):
            self._local(ex, 400, close=True)
            return
        else:
            path = ex.url.partition(b"?")[0]
        # The Host: validated and normalized once per distinct value (cached).
        table = server._table
        host = ""
        raw_host = ex.host
        if raw_host is not None:
            hosts = server._hosts
            lines = hosts.get(raw_host)
            if lines is None:
                if len(hosts) >= _HOST_CACHE_MAX:
                    hosts.clear()
                lines = hosts[raw_host] = _host_lines(raw_host)
            ex.host_lines = lines
            host = lines[0]
            if not host:  # _BAD_HOST
                self._local(ex, 400, "bad request: invalid Host header", close=True)
                return
        # The path: routed and forwarded in its normal form (patrd/proxy/target.py).
        if needs_normalizing(path):
            normal = normalize_path(path)
            if normal is None or (
                has_encoded_slash(normal)
                and slash_in_route_segments(normal, table.prefix_depth(host))
            ):
                self._local(ex, 400, "bad request: invalid request path", close=True)
                return
            if normal != path:
                ex.url = normal + ex.url[len(path) :]
                path = normal
        challenges = self._peer.challenges
        if challenges is not None and path.startswith(_ACME_PREFIX):
            answer = challenges.get(path[len(_ACME_PREFIX) :].decode("latin-1"))
            if answer is None:
                self._local(ex, 404, "no such ACME challenge")
            else:
                self._local(ex, 200, body=answer)
            return
        route = table.lookup(host, path.decode("latin-1"))
        if route is None:
            self._local(ex, 404)
            return
        ex.body_limit = route.max_body_bytes or self._options.max_body_bytes
        if route.timeouts is not None:  # a managed URL's own (0: the proxy's)
            own = route.timeouts
            default = ex.timeouts
            ex.timeouts = (
                own[0] or default[0],
                own[1] or default[1],
                own[2] or default[2],
                own[3] or default[3],
            )
        if (ex.content_length or 0) > ex.body_limit or ex.body_received > ex.body_limit:
            self._local(ex, 413, close=True)
            return
        if route.deployment:
            counters = server.deployment_stats.get(route.deployment)
            if counters is None:
                counters = server.deployment_stats[route.deployment] = DeploymentCounters()
            ex.stats = counters
            ex.t0 = self._peer.loop.time()
        if route.special and self._redirected(ex, route):
            return
        if route.status is not RouteStatus.RUNNING:
            self._local(ex, 503, f"deployment {route.deployment} is {route.status.value}")
            return
        if not route.backends:
            if route.hold:  # its only instance is being swapped: wait for the new one
                self._hold(ex, host, path.decode("latin-1"), route.deployment)
                return
            self._local(ex, 503, f"deployment {route.deployment} has no ready instance")
            return
        self._forward(ex, route)

    def _forward(self, ex: _Exchange, route: Route) -> None:
        server = self._server
        ex.backends = backends = route.backends
        pool = server._pick(backends)
        pool.outstanding += 1
        ex.pool = pool
        ex.head = self._request_head(ex, route)
        if ex.request_done:  # a pipelined request: the upstream's turn from now on
            self._set_deadline(ex.timeouts[_T_UPSTREAM_HEADER])
        if not ex.websocket:  # a websocket always gets a connection of its own
            conn = pool.take()
            if conn is not None:
                self.attach(ex, conn, reused=True)
                return
        server._connect(pool, ex)

    def _hold(self, ex: _Exchange, host: str, path: str, deployment: str) -> None:
        def alive() -> bool:
            return not ex.response_done and self._mode != _CLOSED

        def on_route(route: Route | None) -> None:
            if route is None:
                self._local(ex, 404)
            elif route.status is RouteStatus.RUNNING and route.backends:
                self._forward(ex, route)
            else:
                on_timeout()  # the swap ended without a new instance

        def on_timeout() -> None:
            self._local(
                ex,
                503,
                f"deployment {deployment} is replacing its instance; try again",
                headers=b"Retry-After: %d\r\n" % RETRY_AFTER_S,
            )

        self._server._held.hold(self._peer.loop, host, path, on_route, on_timeout, alive)

    def _absolute_form(self, ex: _Exchange) -> bool:
        """``GET http://host/path``: route by the URL's host, forward origin-form."""
        try:
            url = httptools.parse_url(ex.url)
        except httptools.HttpParserInvalidURLError:
            return False
        if not url.host or url.schema.lower() not in (b"http", b"https") or url.userinfo:
            return False
        path = url.path or b"/"
        if path[:1] != b"/":
            return False
        ex.url = path + (b"?" + url.query if url.query else b"")
        ex.host = url.host + (b":%d" % url.port if url.port else b"")  # validated as a Host
        return True

    def _redirected(self, ex: _Exchange, route: Route) -> bool:
        """Managed URLs: http → https, and redirect targets. True if answered."""
        url = ex.url.decode("latin-1")
        if not url.startswith("/"):
            return False  # OPTIONS *
        https_port = self._server._https_port
        has_certificate = self._server._has_certificate
        if (
            route.https_redirect
            and self._peer.scheme == b"http"
            and https_port is not None
            and (has_certificate is None or has_certificate(route.host))
        ):
            port = "" if https_port == 443 else f":{https_port}"
            self._redirect(ex, 308, f"https://{route.host}{port}{url}")
            return True
        if route.redirect is not None:
            location = redirect_location(route.redirect, route.path_prefix, url)
            self._redirect(ex, route.redirect_status, location)
            return True
        return False

    def _redirect(self, ex: _Exchange, status: int, location: str) -> None:
        encoded = location.encode("latin-1", "replace")
        self._local(
            ex,
            status,
            body=b"redirecting to %b\n" % encoded,
            headers=b"Location: %b\r\n" % encoded,
        )

    def _request_head(self, ex: _Exchange, route: Route) -> bytes:
        if ex.websocket:
            framing = b"Connection: Upgrade\r\nUpgrade: %b\r\n" % (ex.upgrade or b"websocket")
        elif ex.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif ex.content_length is not None:
            framing = b"Content-Length: %d\r\n" % ex.content_length
        else:
            framing = b""
        _, _, host_line, forwarded_host = ex.host_lines
        peer = self._peer
        forwarded = peer.forwarded
        if peer.trusted:
            forwarded = self._from_trusted(ex)
            forwarded_host = b""
        url = ex.url
        if route.upstream_host is not None:  # a managed URL proxying to an outside origin
            url = join_base(route.upstream_path.encode("latin-1"), url)
            host_line = b"Host: %b\r\n" % route.upstream_host.encode("idna")
        return b"%b %b HTTP/1.1\r\n%b%b%b%b%b\r\n" % (
            ex.method,
            url,
            host_line,
            b"".join(ex.parts),
            forwarded,
            forwarded_host,
            framing,
        )

    def _from_trusted(self, ex: _Exchange) -> bytes:
        """Forwarding headers for a request from a trusted proxy: its values, ours appended."""
        peer = self._peer.ip
        chain = None
        client = peer
        if ex.xff is not None:
            chain = ex.xff + b", " + peer.encode("ascii", "replace")
            client = forwarded_client(ex.xff, peer, self._server._trusted)
        return forwarding_lines(
            client.encode("ascii", "replace"),
            chain,
            None if ex.xf_proto else self._peer.scheme,
            None if ex.xf_host or not ex.host_lines[1] else ex.host_lines[1],
        )

    def _forwarded_key(self, ex: _Exchange) -> str | None:
        """Rate-limit key of the client behind a trusted proxy (None: not limited)."""
        if ex.xff is None:
            return None  # the proxy's own request
        peer = self._peer.ip
        client = forwarded_client(ex.xff, peer, self._server._trusted)
        if client == peer or self._server._limits.exempt(client):
            return None
        return client_key(client)

    def _refuse(self, status: int) -> None:
        """A connection cap is reached: answer at once, read nothing, close."""
        transport = self.transport
        assert transport is not None
        self._server.refused_connections += 1
        body = _REFUSED[status]
        transport.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
            % (status, _REASONS[status], len(body), body)
        )
        self._linger()

    def attach(self, ex: _Exchange, conn: _Upstream, reused: bool) -> None:
        """Bind ``conn`` to ``ex``; send the request head and any buffered body."""
        transport = conn.transport
        assert transport is not None and self.transport is not None
        ex.upstream = conn
        conn.begin(ex, self.transport, reused)
        if self._write_paused:
            transport.pause_reading()
        if conn.write_paused:
            self._pause_reading(_P_UPSTREAM_FULL)
        buffered = ex.body_buffer
        if buffered:
            ex.body_buffer = None
            ex.body_buffered = 0
            ex.body_sent = True
            transport.write(b"".join([ex.head, *buffered]))
            self._resume_reading(_P_BUFFERING)
        else:
            transport.write(ex.head)

    def _send_body(self, ex: _Exchange, data: bytes) -> None:
        conn = ex.upstream
        if conn is not None and conn.transport is not None:
            ex.body_sent = True
            conn.transport.write(data)
            return
        if ex.body_buffer is None:
            ex.body_buffer = []
        ex.body_buffer.append(data)
        ex.body_buffered += len(data)
        if ex.body_buffered > _BODY_BUFFER_HIGH:
            self._pause_reading(_P_BUFFERING)

    # --- answers and completion (the upstream side calls these too) ---

    def response_complete(self, ex: _Exchange, reusable: bool) -> None:
        """The upstream's answer to ``ex`` has been relayed completely."""
        conn = ex.upstream
        ex.upstream = None
        ex.response_done = True
        if conn is not None:
            self._unbind(conn)
            conn.pool.release(conn, reusable and ex.request_done and not ex.websocket)
        if ex.pool is not None:
            ex.pool.unpin()
            ex.pool = None
        if ex.request_done:
            self._finish(ex)
        elif ex.close_after:
            self._finish_counters(ex)
            self._active = None
            self._linger()
        else:
            ex.discard = True  # the rest of the request body is read and dropped

    def upstream_failed(self, ex: _Exchange) -> None:
        """The upstream connection failed: 502 if nothing was sent yet, else close."""
        if ex.finished or ex.response_done:
            return
        self._drop_upstream(ex)
        if ex.pool is not None:
            ex.pool.unpin()
            ex.pool = None
        if ex.response_started:
            ex.response_done = True
            self.abort()
            return
        self._local(ex, 502)

    def retry(self, ex: _Exchange, conn: _Upstream) -> bool:
        """A reused connection died before answering: resend on a new one if safe."""
        if (
            ex.retried
            or ex.body_sent
            or ex.response_started
            or ex.pool is None
            or not (ex.method in _IDEMPOTENT or not (ex.chunked or ex.content_length))
        ):
            return False
        ex.retried = True
        ex.upstream = None
        self._unbind(conn)
        self._server._connect(ex.pool, ex)
        return True

    def start_tunnel(self, ex: _Exchange, rest: bytes) -> None:
        """The upstream switched protocols: pipe bytes both ways from now on."""
        transport = self.transport
        conn = ex.upstream
        assert transport is not None and conn is not None and conn.transport is not None
        self._mode = _TUNNEL
        ex.response_started = ex.response_done = True
        if ex.stats is not None:  # the 101 counts; the websocket's lifetime does not
            ex.stats.record(101, self._peer.loop.time() - ex.t0)
            ex.stats = None
        if ex.counted:  # an open websocket is not an in-flight request
            ex.counted = False
            self._server._request_done()
        buffered = ex.tunnel_buffer
        ex.tunnel_buffer = None
        if buffered:
            conn.transport.write(b"".join(buffered))
        self._resume_reading(_P_BUFFERING)
        self._set_deadline(self._options.idle_timeout_s)  # no byte either way → closed
        if rest:
            transport.write(rest)

    def close_tunnel(self) -> None:
        self._mode = _CLOSED
        if self.transport is not None:
            self.transport.close()

    def _local(
        self,
        ex: _Exchange,
        status: int,
        text: str | None = None,
        close: bool = False,
        *,
        body: bytes | None = None,
        headers: bytes = b"",
    ) -> None:
        """Answer ``ex`` from the proxy itself."""
        transport = self.transport
        assert transport is not None
        ex.response_started = ex.response_done = True
        ex.status = status
        if ex.body_buffer is not None:
            ex.body_buffer = None
            self._resume_reading(_P_BUFFERING)
        keep = (
            ex.keep_alive
            and not close
            and not ex.websocket
            and not ex.close_after
            and not self._server._draining
        )
        if not keep:
            ex.close_after = True
        if body is None:
            body = ((text or _TEXTS[status]) + "\n").encode()
        head = (
            b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"%bContent-Length: %d\r\nConnection: %b\r\n\r\n"
            % (status, _REASONS[status], headers, len(body), b"keep-alive" if keep else b"close")
        )
        transport.write(head if ex.is_head else head + body)
        if ex.request_done:
            self._finish(ex)
        elif not keep and (ex.chunked or ex.content_length or ex.websocket):
            self._finish_counters(ex)
            self._active = None
            self._linger()
        else:
            # No body follows (answered from on_headers_complete; the message
            # completes in the same read): _finish closes the connection then.
            # Lingering instead would hold a TLS client 2 s, since a TLS
            # transport cannot half-close.
            ex.discard = True

    def _finish(self, ex: _Exchange) -> None:
        """``ex`` is complete both ways: close, or go on with the next request."""
        self._finish_counters(ex)
        if ex is self._active:
            self._active = None
        mode = self._mode
        if mode in (_LINGER, _CLOSED, _TUNNEL):
            return
        queue = self._queue
        if (
            ex.close_after
            or mode == _UPGRADING
            or ((self._eof or self._server._draining) and not queue and self._parsing is None)
        ):
            self._close()
            return
        if queue:
            self._advance()
        elif mode == _NOPARSE or self._eof:
            self._close()
        elif self._parsing is None:
            self._set_deadline(self._options.idle_timeout_s)
            if not self._advancing:  # (_advance drops it when its loop is done)
                self._queue = None  # a pipeline's deque (about 600 bytes): made again if needed
            server = self._server
            if not self._feeding and len(server._clients) > server.keep_parsers_upto:
                self._parser = None  # idle: a new one for the next request

    def _advance(self) -> None:
        """Dispatch pipelined requests, in a loop rather than by recursion."""
        if self._advancing:
            return
        self._advancing = True
        try:
            queue = self._queue
            while queue and self._active is None and self._mode in (_HTTP, _NOPARSE):
                nxt = queue.popleft()
                if not queue:
                    self._resume_reading(_P_PIPELINE)
                self._active = nxt
                self._dispatch(nxt)
        finally:
            self._advancing = False
        if not self._queue:
            self._queue = None  # emptied: not kept while idle
            if self._active is None and self._mode == _NOPARSE:
                self._close()

    def _finish_counters(self, ex: _Exchange) -> None:
        if ex.finished:
            return
        ex.finished = True
        if ex.stats is not None:
            ex.stats.record(ex.status, self._peer.loop.time() - ex.t0)
        if ex.pool is not None:
            ex.pool.unpin()
            ex.pool = None
        if ex.counted:
            ex.counted = False
            self._server._request_done()

    def _unbind(self, conn: _Upstream) -> None:
        """Undo the flow-control links between this client and ``conn``."""
        if self._write_paused and conn.transport is not None:
            conn.transport.resume_reading()
        if conn.write_paused:
            self._resume_reading(_P_UPSTREAM_FULL)

    def _drop_upstream(self, ex: _Exchange, graceful: bool = False) -> None:
        conn = ex.upstream
        ex.upstream = None
        if conn is None:
            return
        self._unbind(conn)
        conn.exchange = None
        conn.out = None
        if graceful:
            conn.close()  # a websocket: let the last frames through
        else:
            conn.abort()

    def _body_too_large(self, ex: _Exchange) -> None:
        if ex is not self._active:
            ex.error = 413  # a pipelined request: answered in turn
            self._mode = _NOPARSE
            return
        self._drop_upstream(ex)
        if ex.response_started:
            self.abort()
        else:
            self._local(ex, 413, close=True)

    def _on_parse_error(self, exc: Exception | None, status: int = 400) -> None:
        """A malformed or too large request: answer if possible, then close."""
        if isinstance(exc, httptools.HttpParserCallbackError) and not isinstance(
            exc.__context__, _Stop
        ):
            self._server._log.error("proxy.callback_failed", exc_info=exc.__context__)
            self.abort()
            return
        ex = self._parsing
        active = self._active
        if ex is not None and ex is active:
            # In the body of the request being answered.
            self._drop_upstream(ex)
            if ex.response_started:
                self.abort()
            else:
                self._local(ex, status, close=True)
            return
        if active is not None:
            self.abort()  # a broken request pipelined behind one in flight
            return
        transport = self.transport
        assert transport is not None
        body = (_TEXTS[status] + "\n").encode()
        transport.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
            % (status, _REASONS[status], len(body), body)
        )
        self._linger()

    def _on_upgrade(self, rest: bytes) -> None:
        ex = self._active
        if ex is not None and ex.websocket and not ex.response_done:
            self._mode = _UPGRADING
            if rest:
                ex.tunnel_buffer = [rest]
            return
        if self._mode == _HTTP and rest:
            # Not a websocket (say "Upgrade: h2c" without a body): it was
            # proxied as plain HTTP, and what follows is the next request.
            self.data_received(rest)

    # --- connection control ---

    def _pause_reading(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None:
                self.transport.resume_reading()

    def _linger(self) -> None:
        """Half-close after an error answer; drop input until the client closes."""
        transport = self.transport
        assert transport is not None
        self._mode = _LINGER
        self._parsing = None
        self._raw_left = 0
        if self._paused:
            self._paused = 0
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self._set_deadline(_LINGER_S)

    def _close(self) -> None:
        self._mode = _CLOSED
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> None:
        """Drain: close now if no request is in flight or half received."""
        if self._mode == _HTTP and self._active is None and self._parsing is None:
            self._close()

    def abort(self) -> None:
        self._mode = _CLOSED
        if self.transport is not None:
            self.transport.abort()

    # --- timeouts: one deadline per connection, in the server's queues (deadlines.py) ---

    def _set_deadline(self, delay: float) -> None:
        self._peer.deadlines.set(self, delay)

    def deadline_passed(self) -> None:
        mode = self._mode
        if mode == _CLOSED:
            return
        if mode == _LINGER:
            self.abort()
        elif self._active is None:
            # Header timeout or idle keep-alive timeout: close without a word.
            self._close()
        else:
            self._timed_out(self._active)

    def _timed_out(self, ex: _Exchange) -> None:
        """A timeout after the head: which one depends on where the exchange is."""
        fired = self._server._fired
        if self._mode == _TUNNEL:
            fired[_T_WEBSOCKET] += 1  # no byte either way for idle_timeout_s
            self.abort()
            return
        if self._write_paused and ex.response_started:
            fired[_T_SEND] += 1  # the client does not read its answer
            self._drop_upstream(ex)
            self.abort()
            return
        if (
            self._parsing is ex
            and not ex.request_done
            and not self._paused & (_P_UPSTREAM_FULL | _P_BUFFERING)
        ):
            fired[_T_BODY] += 1  # the request body stopped arriving
            self._drop_upstream(ex)
            if ex.response_started:
                self.abort()
            else:
                self._local(ex, 408, close=True)
            return
        self._drop_upstream(ex)
        if not ex.response_started:
            fired[_T_UPSTREAM_HEADER] += 1  # no response head (or the request not read)
            self._local(ex, 504, close=not ex.request_done)
            return
        fired[_T_UPSTREAM_IDLE] += 1  # the response body stopped arriving
        ex.response_done = True
        self.abort()


# --- upstream side -----------------------------------------------------------


class _Upstream(asyncio.Protocol):
    """One connection to a backend: send requests, parse and relay the answers."""

    __slots__ = (
        "chunked_out",
        "complete",
        "conn_values",
        "exchange",
        "got_bytes",
        "has_length",
        "head_101",
        "head_only",
        "head_size",
        "interim",
        "keep_alive",
        "out",
        "parser",
        "parts",
        "pending",
        "pool",
        "pooled",
        "reason",
        "reused",
        "server",
        "transfer_encoding",
        "transport",
        "tunnel",
        "until_eof",
        "upgrade_value",
        "write_paused",
    )

    def __init__(self, server: ProxyServer, pool: _Pool) -> None:
        self.server = server
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.out: asyncio.Transport | None = None  # the client's transport
        # Bytes for the client from the current input, written in one go
        # after parsing it (a small answer costs one send, not two).
        self.pending: list[bytes] = []
        self.pooled = False
        self.reused = False
        self.got_bytes = False
        self.write_paused = False
        self.tunnel = False
        self.reason = b""
        self.parts: list[bytes] = []
        self.transfer_encoding: bytes | None = None
        self.has_length = False
        self.head_size = 0
        self.conn_values: list[bytes] | None = None
        self.upgrade_value: bytes | None = None
        self.interim = False
        self.complete = False
        self.keep_alive = False
        self.chunked_out = False
        self.until_eof = False
        self.head_only = False
        self.head_101 = b""

    def begin(self, ex: _Exchange, out: asyncio.Transport, reused: bool) -> None:
        self.exchange = ex
        self.out = out
        self.reused = reused
        self.got_bytes = False
        self.pending.clear()
        self.complete = False
        self.interim = False
        self.keep_alive = False
        self.chunked_out = False
        self.until_eof = False
        self.head_only = False

    def close(self) -> None:
        self.exchange = None
        self.out = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        self.out = None
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop: not a subclass
        self.server._open += 1
        self.server._upstreams.add(self)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Bytes on an idle connection: it cannot carry a request any more.
            if self.pooled:
                self._unpool()
            self.close()
            return
        if self.tunnel:
            if self.out is not None:
                self.out.write(data)
            ex.client._set_deadline(self.server._options.idle_timeout_s)
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._flush()
            self._upgraded(ex, data[int(exc.args[0]) :])
            return
        except httptools.HttpParserError as exc:
            self._flush()
            if self.head_only:
                # A HEAD answer ends with its head, which llhttp cannot be
                # told: we stopped it. Reusable only if nothing followed.
                self.parser = httptools.HttpResponseParser(self)
                ex.client.response_complete(ex, self.keep_alive and data.endswith(b"\r\n\r\n"))
                return
            if self.complete:
                ex.client.response_complete(ex, reusable=False)  # junk after the answer
                return
            if isinstance(exc, httptools.HttpParserCallbackError) and not isinstance(
                exc.__context__, _Stop
            ):
                self.server._log.error("proxy.upstream_callback_failed", exc_info=exc.__context__)
            ex.client.upstream_failed(ex)
            return
        if self.pending:
            self._flush()
        if self.complete:
            ex.client.response_complete(ex, self.keep_alive)
        elif ex.response_started and not ex.client._write_paused:
            ex.client._set_deadline(ex.timeouts[_T_UPSTREAM_IDLE])  # a body split over reads

    def _flush(self) -> None:
        pending = self.pending
        if pending:
            if self.out is not None:
                self.out.write(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()

    def eof_received(self) -> bool:
        return False  # close; connection_lost decides what it means

    def connection_lost(self, exc: Exception | None) -> None:
        # As _Client.connection_lost: the parser's bound callbacks make a cycle
        # that only the cyclic GC would free (a backend that closes after each
        # answer: one per request). Nothing parses after this.
        del self.parser
        server = self.server
        server._upstreams.discard(self)
        server._transport_lost()
        if self.pooled:
            self._unpool()
        self.transport = None
        ex = self.exchange
        self.exchange = None
        self.out = None
        if ex is None:
            return
        client = ex.client
        if self.tunnel:
            client.close_tunnel()
        elif ex.response_started and self.until_eof and not ex.response_done:
            client.response_complete(ex, reusable=False)  # the end of a read-until-close body
        elif self.reused and not self.got_bytes and client.retry(ex, self):
            pass
        else:
            client.upstream_failed(ex)

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None:
            ex.client._pause_reading(_P_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None:
            ex.client._resume_reading(_P_UPSTREAM_FULL)

    def _unpool(self) -> None:
        self.pooled = False
        with contextlib.suppress(ValueError):
            self.pool.idle.remove(self)

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Stop  # a second answer to one request
        self.reason = b""
        self.parts = []
        self.transfer_encoding = None
        self.has_length = False
        self.head_size = 0
        self.conn_values = None
        self.upgrade_value = None

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > _MAX_RESPONSE_HEAD:
            raise _Stop  # → 502
        kind = _RESPONSE_EXACT.get(name)
        if kind is None:
            kind = _RESPONSE_HEADERS.get(name.lower(), _H_PASS)
        if kind == _H_PASS:
            self.parts += (name, b": ", value, b"\r\n")
        elif kind == _H_CONTENT_LENGTH:
            self.has_length = True
            self.parts += (name, b": ", value, b"\r\n")
        elif kind == _H_TRANSFER_ENCODING:
            self.transfer_encoding = value
        elif kind == _H_CONNECTION:
            if self.conn_values is None:
                self.conn_values = []
            self.conn_values.append(value)
        elif kind == _H_UPGRADE:
            self.upgrade_value = value

    def on_headers_complete(self) -> None:
        ex = self.exchange
        out = self.out
        if ex is None or out is None or ex.response_done:
            raise _Stop
        parser = self.parser
        status = parser.get_status_code()
        if self.conn_values is not None:
            self.parts = _without_named(self.parts, self.conn_values)
        if status < 200:
            if status == 101:
                if not ex.websocket:
                    raise _Stop  # → 502
                self.head_101 = b"HTTP/1.1 101 %b\r\n%bConnection: %b\r\nUpgrade: %b\r\n\r\n" % (
                    self.reason,
                    b"".join(self.parts),
                    b", ".join(self.conn_values or [b"Upgrade"]),
                    self.upgrade_value or b"websocket",
                )
                return
            self.interim = True  # 100 Continue, 103 Early Hints...
            if ex.http11:
                self.pending.append(
                    b"HTTP/1.1 %d %b\r\n%b\r\n" % (status, self.reason, b"".join(self.parts))
                )
            return
        keep = (
            ex.keep_alive and not ex.close_after and not ex.websocket and not self.server._draining
        )
        extra = b""
        if ex.is_head or status == 204 or status == 304:
            pass
        elif self.transfer_encoding is not None:
            te = self.transfer_encoding
            if te.rpartition(b",")[2].strip().lower() != b"chunked":
                # Not chunked last: the body ends with the connection (RFC 9112 6.3).
                self.until_eof = True
                keep = False
                extra = b"Transfer-Encoding: %b\r\n" % te if ex.http11 else b""
            elif ex.http11:
                self.chunked_out = True  # re-chunked; inner codings pass untouched
                extra = b"Transfer-Encoding: %b\r\n" % te
            else:
                keep = False  # an HTTP/1.0 client: the body ends with the connection
        elif not self.has_length:
            self.until_eof = True
            keep = False
        if not keep:
            ex.close_after = True
            extra += b"Connection: close\r\n"
        elif not ex.http11:
            extra += b"Connection: keep-alive\r\n"
        ex.response_started = True
        ex.status = status
        self.pending.append(
            b"HTTP/1.1 %d %b\r\n%b%b\r\n" % (status, self.reason, b"".join(self.parts), extra)
        )
        if ex.is_head:
            self.keep_alive = parser.should_keep_alive()
            self.head_only = True
            raise _Stop

    def on_body(self, body: bytes) -> None:
        if self.chunked_out:
            self.pending.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self.pending.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.chunked_out:
            self.pending.append(b"0\r\n\r\n")
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    def _upgraded(self, ex: _Exchange, rest: bytes) -> None:
        if not self.head_101 or not ex.websocket or self.out is None:
            ex.client.upstream_failed(ex)
            return
        self.tunnel = True
        self.out.write(self.head_101)
        ex.client.start_tunnel(ex, rest)


def _without_named(parts: list[bytes], connection: list[bytes]) -> list[bytes]:
    """``parts`` without the headers that the Connection header names (hop-by-hop)."""
    if len(connection) == 1 and connection[0] in _PLAIN_CONNECTION:
        return parts  # "Connection: keep-alive" on nearly every answer: nothing named
    names = {token.strip().lower() for value in connection for token in value.split(b",")}
    names -= _CONNECTION_OPTIONS
    names.discard(b"")
    if not names:
        return parts
    return [
        part
        for i in range(0, len(parts), 4)
        if parts[i].lower() not in names
        for part in parts[i : i + 4]
    ]
