"""The resolve check's DNS client (dnspython) against a local UDP+TCP responder."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from patrd.tls import resolve
from tests.support.dns_responder import DnsResponder

BIG = [f"192.0.2.{n}" for n in range(1, 41)]  # the answer a datagram would not carry


@pytest.fixture
async def responder() -> AsyncIterator[DnsResponder]:
    server = DnsResponder(
        records={
            ("here.patrd.test", "A"): ["127.0.0.1"],
            ("here.patrd.test", "AAAA"): ["::1"],
            ("big.patrd.test", "A"): BIG,
            ("big.patrd.test", "AAAA"): [],
            ("v4only.patrd.test", "A"): ["192.0.2.7"],
        },
        truncate={"big.patrd.test"},
    )
    await server.start()
    yield server
    await server.stop()


async def test_truncated_udp_answer_is_retried_over_tcp(responder: DnsResponder) -> None:
    found = await resolve.addresses("big.patrd.test", ("127.0.0.1", responder.port))
    assert found == set(BIG)
    assert responder.udp_queries >= 1
    assert responder.tcp_queries >= 1  # only TCP carried the addresses


async def test_plain_udp_answers_do_not_touch_tcp(responder: DnsResponder) -> None:
    found = await resolve.addresses("here.patrd.test", ("127.0.0.1", responder.port))
    assert found == {"127.0.0.1", "::1"}
    assert responder.tcp_queries == 0
    blocking = await asyncio.to_thread(
        resolve.query, "here.patrd.test", 1, ("127.0.0.1", responder.port)
    )
    assert blocking == {"127.0.0.1"}


async def test_nxdomain_and_no_data_are_empty(responder: DnsResponder) -> None:
    server = ("127.0.0.1", responder.port)
    assert await resolve.addresses("nope.patrd.test", server) == set()
    assert await resolve.query_async("v4only.patrd.test", 28, server) == set()


async def test_check_verdicts(responder: DnsResponder) -> None:
    server = ("127.0.0.1", responder.port)
    assert await resolve.check("here.patrd.test", server, frozenset()) == (True, "")
    ok, why = await resolve.check("nope.patrd.test", server, frozenset())
    assert not ok and why == "nope.patrd.test does not resolve"
    ok, why = await resolve.check("v4only.patrd.test", server, frozenset())
    assert not ok and why == "v4only.patrd.test resolves to 192.0.2.7, not to this host"
    assert await resolve.check("v4only.patrd.test", server, frozenset({"192.0.2.7"})) == (
        True,
        "",
    )
    ok, why = await resolve.check("big.patrd.test", server, frozenset({"192.0.2.40"}))
    assert ok, why


async def test_an_unanswering_server_is_empty_not_an_error() -> None:
    # Nothing answers on this port (bound, never read): the check says "does not resolve".
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        found = await resolve.addresses("here.patrd.test", ("127.0.0.1", port))
    assert found == set()
