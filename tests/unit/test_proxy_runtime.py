"""The proxy's multi-process plumbing, pure parts: steering program, wire format, config."""

from __future__ import annotations

import asyncio
import ipaddress
import operator
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from patrd.model.errors import ConfigError
from patrd.proxy import wire
from patrd.proxy.limits import Limits
from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.runtime import EventLoop, ProxyRuntime, loop_factory
from patrd.proxy.server import ProxyOptions
from patrd.proxy.stats import DeploymentCounters
from patrd.proxy.steer import SKF_NET_OFF, SPREAD, Instruction, program
from patrd.settings.config import parse

# --- the steering program, run by a classic BPF interpreter ----------------------


_ALU: dict[int, Callable[[int, int], int]] = {
    0x20: operator.mul,
    0x50: operator.and_,
    0x70: operator.rshift,
    0x90: operator.mod,
    0xA0: operator.xor,
}


def run_bpf(code: list[Instruction], header: bytes) -> int:
    """Execute ``code`` over a packet whose network header is ``header`` (SKF_NET_OFF loads)."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(10_000):
        op, jt, jf, k = code[pc]
        pc += 1
        cls = op & 0x07
        if cls == 0x00:  # LD
            mode, size = op & 0xE0, op & 0x18
            if mode == 0x60:
                a = mem[k]
            else:
                assert mode == 0x20, hex(op)
                offset = k - (SKF_NET_OFF & 0xFFFFFFFF)
                n = {0x00: 4, 0x08: 2, 0x10: 1}[size]
                a = int.from_bytes(header[offset : offset + n], "big")
        elif cls == 0x01:  # LDX M[k]
            x = mem[k]
        elif cls == 0x02:  # ST
            mem[k] = a
        elif cls == 0x04:  # ALU
            operand = x if op & 0x08 else k
            a = _ALU[op & 0xF0](a, operand) & 0xFFFFFFFF
        elif cls == 0x05:  # JMP
            if op & 0xF0 == 0x00:
                pc += k
            else:
                assert op & 0xF0 == 0x10
                pc += jt if a == k else jf
        elif cls == 0x06:  # RET
            return a if op & 0x10 else k
        else:
            raise AssertionError(hex(op))
    raise AssertionError("no return")


def ipv4(src: str) -> bytes:
    return bytes([0x45, 0]) + bytes(10) + ipaddress.IPv4Address(src).packed + bytes(4)


def ipv6(src: str) -> bytes:
    return bytes([0x60]) + bytes(7) + ipaddress.IPv6Address(src).packed + bytes(16)


SPREAD_NETS = ("127.0.0.0/8", "::1/128", "10.1.0.0/16", "2001:db8:aa::/48", "::ffff:192.0.2.0/120")


@pytest.mark.parametrize(
    ("header", "spread"),
    [
        (ipv4("127.0.0.1"), True),
        (ipv4("127.255.0.9"), True),
        (ipv4("10.1.200.3"), True),
        (ipv4("10.2.0.1"), False),
        (ipv4("192.0.2.77"), True),  # from the IPv4-mapped network
        (ipv4("192.0.3.77"), False),
        (ipv4("8.8.8.8"), False),
        (ipv6("::1"), True),
        (ipv6("::2"), False),
        (ipv6("2001:db8:aa:1::5"), True),
        (ipv6("2001:db8:ab::5"), False),
        (bytes([0x50]) + bytes(40), True),  # neither IPv4 nor IPv6: the kernel's hash
    ],
)
def test_exempt_and_trusted_networks_are_spread(header: bytes, spread: bool) -> None:
    result = run_bpf(program(4, SPREAD_NETS), header)
    assert (result == SPREAD) is spread
    if not spread:
        assert 0 <= result < 4


def test_a_client_always_meets_the_same_worker() -> None:
    code = program(3, SPREAD_NETS)
    for address in ("203.0.113.7", "8.8.4.4", "10.2.3.4"):
        assert len({run_bpf(code, ipv4(address)) for _ in range(3)}) == 1
    # IPv6: one key per /64, as the rate limiter keys clients.
    same64 = {run_bpf(code, ipv6(f"2001:db8:1:2::{i:x}")) for i in range(1, 50)}
    assert len(same64) == 1


def test_clients_are_spread_over_every_worker() -> None:
    code = program(4, ())
    seen = [run_bpf(code, ipv4(f"198.51.{i // 256}.{i % 256}")) for i in range(1024)]
    counts = [seen.count(w) for w in range(4)]
    assert min(counts) > 150, counts  # 256 each when perfectly even
    seen6 = {run_bpf(code, ipv6(f"2001:db8:{i:x}::1")) for i in range(64)}
    assert seen6 == {0, 1, 2, 3}


def test_many_networks_still_fit_and_work() -> None:
    nets = [f"10.{i}.0.0/16" for i in range(40)] + [f"2001:db8:{i:x}::/48" for i in range(12)]
    code = program(2, nets)
    assert run_bpf(code, ipv4("10.39.1.1")) == SPREAD
    assert run_bpf(code, ipv4("10.40.1.1")) != SPREAD
    assert run_bpf(code, ipv6("2001:db8:b::1")) == SPREAD
    assert run_bpf(code, ipv6("2001:db8:c::1")) != SPREAD


def test_program_is_rejected_for_no_workers() -> None:
    with pytest.raises(ValueError):
        program(0, ())


# --- wire format --------------------------------------------------------------------


def test_table_round_trip_keeps_every_field() -> None:
    routes = [
        Route(
            "a.example",
            "/",
            "web",
            80,
            RouteStatus.RUNNING,
            (Backend("web-0", "172.18.0.2", 80), Backend("web-1", "172.18.0.3", 80)),
        ),
        Route("a.example", "/old", "", 0, RouteStatus.RUNNING, (), redirect="https://b/x"),
        Route(
            "c.example",
            "/api",
            "",
            0,
            RouteStatus.RUNNING,
            (Backend("ext", "origin.example", 443, tls=True),),
            https_redirect=True,
            upstream_host="origin.example",
            upstream_path="/base",
            redirect_status=307,
            max_body_bytes=1 << 30,
        ),
        Route("d.example", "/", "stopped", 80, RouteStatus.STOPPED, ()),
    ]
    table = RoutingTable.build(routes)
    back = wire.table_from(wire.table_to(table))
    assert back.routes == table.routes
    assert back.match("c.example", "/api/v1") == routes[2]
    assert back.routes[2].special


def test_options_round_trip() -> None:
    options = ProxyOptions(
        rate_limit_exempt=("10.0.0.0/8",), trusted_proxies=("192.0.2.1/32",), forwarded_share=3
    )
    encoded = wire.options_to(options)
    assert wire.options_from(wire._decode(wire.encode({"op": "x", **encoded})[4:])) == options


def test_counters_round_trip() -> None:
    c = DeploymentCounters()
    c.record(200, 0.003)
    c.record(502, 1.7)
    back = wire.counters_from(wire.counters_to(c))
    assert (back.classes, back.buckets, back.count, back.latency_sum) == (
        c.classes,
        c.buckets,
        c.count,
        c.latency_sum,
    )


async def test_frames_over_a_socketpair() -> None:
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=a)
    try:
        big = {"op": "certs", "certs": {f"n{i}": ["/p", i] for i in range(20_000)}}
        frames = wire.encode({"op": "table", "version": 1}) + wire.encode(big)

        def send() -> None:
            b.sendall(frames + wire.encode({"op": "stop"})[:3])  # a torn header,
            b.close()  # then the end of the stream

        # Sent while read: the 418 KB frame is more than the socket buffers and
        # the paused stream reader hold, so a send before reading could block.
        sending = asyncio.ensure_future(asyncio.to_thread(send))
        assert await wire.read(reader) == {"op": "table", "version": 1}
        assert await wire.read(reader) == big
        await sending
        with pytest.raises(wire.WireError):
            await wire.read(reader)
    finally:
        writer.close()
        await writer.wait_closed()


def test_blocking_reads_and_bad_frames() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.encode({"op": "init", "x": [1, 2]}))
        assert wire.read_blocking(b) == {"op": "init", "x": [1, 2]}
        a.sendall(struct.pack(">I", 4) + b"[1]\n")
        with pytest.raises(wire.WireError, match="not a message"):
            wire.read_blocking(b)
        a.sendall(struct.pack(">I", wire.MAX_FRAME + 1))
        with pytest.raises(wire.WireError, match="frame of"):
            wire.read_blocking(b)
        a.close()
        assert wire.read_blocking(b) is None


# --- runtime and config ---------------------------------------------------------------


def test_runtime_workers_and_loops() -> None:
    assert ProxyRuntime(workers=3).resolved_workers() == 3
    assert ProxyRuntime(workers=0).resolved_workers() == 0
    assert 1 <= ProxyRuntime().resolved_workers() <= 8
    assert loop_factory(EventLoop.ASYNCIO) is asyncio.new_event_loop
    loop = loop_factory(EventLoop.UVLOOP)()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    with pytest.raises(ValueError):
        loop_factory("trio")


def test_config_proxy_runtime_keys(tmp_path: Path) -> None:
    default = parse({}, base_dir=tmp_path).proxy
    assert default.workers is None and default.event_loop == "uvloop"
    config = parse({"proxy": {"workers": 0, "event_loop": "asyncio"}}, base_dir=tmp_path).proxy
    assert config.workers == 0 and config.event_loop == "asyncio"
    assert parse({"proxy": {"workers": "auto"}}, base_dir=tmp_path).proxy.workers is None
    assert parse({"proxy": {"workers": 4}}, base_dir=tmp_path).proxy.workers == 4


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"workers": -1}, "proxy.workers"),
        ({"workers": "many"}, "proxy.workers"),
        ({"workers": True}, "proxy.workers"),
        ({"workers": 65}, "proxy.workers"),
        ({"event_loop": "trio"}, "proxy.event_loop"),
    ],
)
def test_config_proxy_runtime_errors_name_the_key(
    tmp_path: Path, raw: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse({"proxy": raw}, base_dir=tmp_path)
    assert err.value.key == key


# --- limits shared by workers ---------------------------------------------------------


def test_forwarded_clients_get_their_share_of_the_rate() -> None:
    """Two workers share a trusted proxy's connections: each allows half the burst."""
    limits = Limits(ProxyOptions(rate_limit_rps=1.0, rate_limit_burst=10, forwarded_share=2))
    forwarded = [limits.retry_after("client", 0.0, forwarded=True) for _ in range(7)]
    assert forwarded == [0] * 5 + [2, 2]  # burst 5, then 0.5 tokens/s
    direct = [limits.retry_after("peer", 0.0) for _ in range(11)]
    assert direct == [0] * 10 + [1]  # a direct client keeps the whole burst
    one = Limits(ProxyOptions(rate_limit_rps=1.0, rate_limit_burst=10))
    assert [one.retry_after("c", 0.0, forwarded=True) for _ in range(11)] == [0] * 10 + [1]
