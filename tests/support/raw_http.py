"""HTTP/1.1 by hand over a plain socket: for what a client library would not send.

Every read is bounded in time; every connection is closed on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

LOOPBACK = "127.0.0.1"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connection(
    port: int, source: str | None = None, host: str = LOOPBACK, **kwargs: Any
) -> AsyncIterator[Connection]:
    """(reader, writer) to ``host:port`` (from address ``source`` when given); closed
    on exit even if the peer has already gone."""
    if source is not None:
        kwargs["local_addr"] = (source, 0)
    reader, writer = await asyncio.open_connection(host, port, **kwargs)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_to_close(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes (bounded by ``timeout``)."""
    chunks: list[bytes] = []
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def raw(port: int, data: bytes, *, timeout: float = 5.0, source: str = LOOPBACK) -> bytes:
    """Send ``data`` (from address ``source``), return everything received until
    the server closes (bounded by ``timeout``)."""
    async with connection(port, source) as (reader, writer):
        writer.write(data)
        return await read_to_close(reader, timeout)


async def read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length framed response (or just its head)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)
    }
    if head_only or "content-length" not in headers:
        return status, headers, b""
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def next_response(
    reader: asyncio.StreamReader, timeout: float = 5.0, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """:func:`read_response` within ``timeout`` seconds."""
    return await asyncio.wait_for(read_response(reader, head_only), timeout)


def status_of(answer: bytes) -> int:
    """The status code of a raw answer (``HTTP/1.1 200 OK…`` → 200)."""
    return int(answer.split(b" ", 2)[1])
