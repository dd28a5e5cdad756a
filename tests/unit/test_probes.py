"""The probe state machine: consecutive counts, startup budget, liveness gated by startup."""

from __future__ import annotations

import asyncio

import pytest

from patrd.control.probes import (
    Phase,
    http_probe,
    liveness_step,
    passed,
    starting,
    startup_interval,
    startup_step,
    tcp_probe,
)


def test_startup_passes_on_first_success():
    s = startup_step(starting(0.0), False, "connection refused", 1.0, budget_s=10)
    assert s.phase is Phase.STARTING and s.startup_attempts == 1
    s = startup_step(s, True, "200", 2.0, budget_s=10)
    assert s.phase is Phase.READY and s.last_detail == "200"


def test_startup_fails_when_the_budget_is_spent():
    s = starting(0.0)
    for t in (1.0, 5.0, 9.9):
        s = startup_step(s, False, "500", t, budget_s=10)
        assert s.phase is Phase.STARTING
    s = startup_step(s, False, "500", 10.0, budget_s=10)
    assert s.phase is Phase.FAILED
    assert startup_step(s, True, "200", 11.0, budget_s=10).phase is Phase.FAILED, "final"


def test_liveness_only_after_startup():
    s = starting(0.0)
    assert liveness_step(s, False, "500", 1.0, threshold=1) is s


def test_liveness_counts_consecutive_failures_and_a_pass_resets():
    s = startup_step(starting(0.0), True, "200", 0.1, budget_s=5)
    s = liveness_step(s, False, "500", 1, threshold=3)
    s = liveness_step(s, False, "500", 2, threshold=3)
    assert s.liveness_failures == 2 and s.phase is Phase.READY
    s = liveness_step(s, True, "200", 3, threshold=3)
    assert s.liveness_failures == 0
    for t in (4, 5):
        s = liveness_step(s, False, "timeout after 3s", t, threshold=3)
    assert s.phase is Phase.READY
    s = liveness_step(s, False, "timeout after 3s", 6, threshold=3)
    assert s.phase is Phase.UNHEALTHY and s.last_detail == "timeout after 3s"


@pytest.mark.parametrize(
    ("code", "ok"),
    [(199, False), (200, True), (302, True), (399, True), (400, False), (500, False)],
)
def test_pass_range(code, ok):
    assert passed(code) is ok


def test_startup_interval_is_capped():
    assert startup_interval(10) == 1.0
    assert startup_interval(0.2) == 0.2


async def test_http_and_tcp_probes_against_real_sockets():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # the TCP probe connects and closes
            writer.close()
            return
        code = b"204" if request.startswith(b"GET /ok ") else b"503"
        writer.write(b"HTTP/1.1 " + code + b" X\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await http_probe("127.0.0.1", port, "/ok", 2) == (True, "204")
        assert await http_probe("127.0.0.1", port, "/bad", 2) == (False, "503")
        assert (await tcp_probe("127.0.0.1", port))[0] is True
    finally:
        server.close()
        await server.wait_closed()
    ok, detail = await http_probe("127.0.0.1", port, "/ok", 1)
    assert ok is False and "refused" in detail.lower()
