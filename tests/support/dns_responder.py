"""A tiny DNS responder on loopback, UDP and TCP on the same port, for tests.

``records`` maps (name, rdtype) to addresses. Names in ``truncate`` get an
empty answer with the TC bit over UDP, and the full answer only over TCP,
as a server does when the answer does not fit a datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class DnsResponder:
    records: dict[tuple[str, str], list[str]]
    truncate: set[str] = field(default_factory=set)
    udp_queries: int = 0
    tcp_queries: int = 0
    port: int = 0
    _transport: asyncio.DatagramTransport | None = None
    _server: asyncio.Server | None = None

    def answer(self, wire: bytes, over_tcp: bool) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        addresses = self.records.get((name, rdtype))
        if addresses is None and not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif name in self.truncate and not over_tcp:
            response.flags |= dns.flags.TC
        elif addresses:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, rdtype, addresses)
            )
        return response.to_wire()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # One port for both: bind TCP first on a free port, then UDP on the same.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._tcp, sock=sock)
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=("127.0.0.1", self.port)
        )

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                wire = await reader.readexactly(length)
                self.tcp_queries += 1
                reply = self.answer(wire, over_tcp=True)
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder) -> None:
        self._responder = responder
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes | int, ...]) -> None:
        self._responder.udp_queries += 1
        assert self._transport is not None
        self._transport.sendto(self._responder.answer(data, over_tcp=False), addr)
