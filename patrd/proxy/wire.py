"""Messages between the daemon and its proxy worker processes (plain data).

A message is one JSON object, framed by its length (4 bytes, big-endian),
on a ``socketpair`` per worker. One message is one state change applied in
one assignment on the other side: the whole routing table, the whole
certificate bundle, the whole challenge map. JSON rather than pickle: the
shapes are few, and a frame can never run code.

Daemon → worker (``op``):

* ``init``: everything a worker needs to start (options, its listening
  sockets' fds, the event loop, the current table, certificates, challenges);
* ``table`` (``version``, ``routes``), ``certs`` (``version``, ``certs``:
  name → [file, serial]), ``challenges`` (``version``, ``tokens``);
* ``report`` (``seq``): send a report now; ``stop`` (``timeout``): drain, exit.

Worker → daemon: ``ready`` (``pid``), ``report`` (``table_version``,
``outstanding``, counters, ``stats``, and ``seq`` when asked for), ``ack``
(``what``, ``version``) after certificates or challenges are in place.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import asdict, fields
from typing import Any, Final

from patrd.model.listen import Listen
from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, Snapshot
from patrd.proxy.stats import DeploymentCounters

__all__ = [
    "MAX_FRAME",
    "WireError",
    "counters_from",
    "counters_to",
    "encode",
    "options_from",
    "options_to",
    "read",
    "read_blocking",
    "snapshot_to",
    "table_from",
    "table_to",
]

MAX_FRAME: Final = 256 * 1024 * 1024  # a table of every route fits many times over
_HEADER: Final = struct.Struct(">I")

Message = dict[str, Any]


class WireError(Exception):
    """A frame that is not a message (the peer is broken or gone)."""


def encode(message: Message) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


async def read(reader: asyncio.StreamReader) -> Message | None:
    """The next message; ``None`` at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("stream ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes")
    try:
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise WireError("stream ended inside a frame") from None
    return _decode(data)


def read_blocking(sock: socket.socket) -> Message | None:
    """The next message from a blocking socket (a worker's ``init``, before its loop runs)."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes")
    data = _recv_exactly(sock, size)
    if data is None:
        raise WireError("stream ended inside a frame")
    return _decode(data)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            if chunks:
                raise WireError("stream ended inside a frame")
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _decode(data: bytes) -> Message:
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("not a message")
    return message


# --- payloads -----------------------------------------------------------------


def options_to(options: ProxyOptions) -> dict[str, Any]:
    return asdict(options)


def options_from(data: dict[str, Any]) -> ProxyOptions:
    values: dict[str, Any] = {}
    for f in fields(ProxyOptions):
        if f.name in data:
            value = data[f.name]
            if f.name == "http_listen":
                value = [Listen(**listen) for listen in value]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return ProxyOptions(**values)


def table_to(table: RoutingTable) -> list[list[Any]]:
    return [
        [
            r.host,
            r.path_prefix,
            r.deployment,
            r.port,
            r.status.value,
            [[b.instance, b.host, b.port, b.tls] for b in r.backends],
            r.https_redirect,
            r.redirect,
            r.redirect_status,
            r.upstream_host,
            r.upstream_path,
            r.max_body_bytes,
            r.hold,
            list(r.timeouts) if r.timeouts is not None else None,
        ]
        for r in table.routes
    ]


def table_from(data: list[list[Any]]) -> RoutingTable:
    routes = []
    for (
        host,
        prefix,
        deployment,
        port,
        status,
        backends,
        https_redirect,
        redirect,
        redirect_status,
        upstream_host,
        upstream_path,
        max_body_bytes,
        hold,
        timeouts,
    ) in data:
        routes.append(
            Route(
                host=host,
                path_prefix=prefix,
                deployment=deployment,
                port=port,
                status=RouteStatus(status),
                backends=tuple(Backend(i, h, p, t) for i, h, p, t in backends),
                https_redirect=https_redirect,
                redirect=redirect,
                redirect_status=redirect_status,
                upstream_host=upstream_host,
                upstream_path=upstream_path,
                max_body_bytes=max_body_bytes,
                hold=hold,
                timeouts=tuple(timeouts) if timeouts is not None else None,
            )
        )
    return RoutingTable.build(routes)


def counters_to(c: DeploymentCounters) -> list[Any]:
    return [c.classes, c.buckets, c.count, c.latency_sum]


def counters_from(data: list[Any]) -> DeploymentCounters:
    c = DeploymentCounters()
    classes, buckets, c.count, c.latency_sum = data
    c.classes[:] = classes
    c.buckets[:] = buckets
    return c


def snapshot_to(snapshot: Snapshot, with_stats: bool) -> Message:
    message: Message = {
        "outstanding": [[h, p, n] for (h, p), n in snapshot.outstanding.items()],
        "active": snapshot.active_requests,
        "limited": snapshot.limited_requests,
        "refused": snapshot.refused_connections,
        "timeouts": snapshot.timeouts,
    }
    if with_stats:
        message["stats"] = {name: counters_to(c) for name, c in snapshot.deployment_stats.items()}
    return message
