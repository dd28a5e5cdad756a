"""patrd's nftables table in a real kernel, inside namespaces these tests create.

A "server" namespace gets the rendered table and listeners on several ports;
a "client" namespace, joined by a veth pair, holds two source addresses: an
*attacker* and a *polite* client. Nothing is loaded into the root namespace
and all traffic stays on the veth pair. Every loop is bounded in count and
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from patrd.firewall.apply import FirewallKeeper, Nft, SyncResult
from patrd.firewall.rules import FirewallRules, Policy, render
from patrd.settings.config import Config, FirewallConfig, Listen, ProxyConfig, TlsConfig
from tests.support.netns import in_ns, link_of, listener_in, netns, run, sockets_in, veth
from tests.support.waits import until

SERVER = "10.99.0.1"
ATTACKER = "10.99.0.2"
POLITE = "10.99.0.3"
PORTS = (22, 25, 80, 443, 7070, 9999)  # 9999: a service the firewall must hide
GOLDEN = Path(__file__).parents[1] / "unit" / "golden"


@dataclass
class Fence:
    server: str
    client: str
    nft: Nft
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def connect(
        self, src: str, port: int, timeout: float = 0.5
    ) -> tuple[str, socket.socket | None]:
        """("open", sock) | ("timeout", None) | ("refused", None)."""
        [sock] = sockets_in(self.client, 1)
        return await self._connect(sock, src, port, timeout)

    async def _connect(
        self, sock: socket.socket, src: str, port: int, timeout: float
    ) -> tuple[str, socket.socket | None]:
        sock.bind((src, 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (SERVER, port))
        except TimeoutError:
            sock.close()
            return "timeout", None
        except ConnectionRefusedError:
            sock.close()
            return "refused", None
        return "open", sock

    async def burst(self, src: str, port: int, n: int, timeout: float) -> list[str]:
        """``n`` connection attempts at once; each is closed as soon as it is decided."""
        socks = sockets_in(self.client, n)
        results = await asyncio.gather(*(self._connect(s, src, port, timeout) for s in socks))
        for _, sock in results:
            if sock is not None:
                sock.close()
        return [state for state, _ in results]

    async def state(self, src: str, port: int, timeout: float = 0.5) -> str:
        state, sock = await self.connect(src, port, timeout)
        if sock is not None:
            sock.close()
        return state


@pytest.fixture
async def fence() -> AsyncIterator[Fence]:
    with netns("ptds") as server, netns("ptdc") as client:
        veth(server, f"{SERVER}/24", client, f"{ATTACKER}/24")
        in_ns(client, "ip", "addr", "add", f"{POLITE}/24", "dev", link_of(client, ATTACKER))
        f = Fence(server, client, Nft(("ip", "netns", "exec", server, "nft")))

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            f.writers.add(writer)
            try:
                writer.write(b"ok\n")
                for _ in range(1000):
                    data = await reader.read(1024)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                f.writers.discard(writer)
                writer.close()

        servers = [
            await asyncio.start_server(echo, sock=listener_in(server, "0.0.0.0", port))
            for port in PORTS
        ]
        try:
            yield f
        finally:
            for s in servers:
                s.close()
            for w in list(f.writers):
                w.close()
            for s in servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s.wait_closed(), 2)


def rules(**overrides: object) -> FirewallRules:
    base: dict[str, object] = {
        "policy": Policy.DROP,
        "ssh_port": 22,
        "proxy_ports": (80, 443),
        "api_port": 7070,
        "api_allow": (ipaddress.ip_network(f"{POLITE}/32"),),
        "allow_tcp": (25,),
        "new_conn_rate": 0,
        "max_conn_per_source": 0,
    }
    base.update(overrides)
    return FirewallRules(**base)  # type: ignore[arg-type]


async def test_open_ports_are_the_configured_ones(fence: Fence) -> None:
    # Without the table everything listening is reachable: the rules make the difference.
    assert await fence.state(ATTACKER, 9999) == "open"
    await fence.nft.load(render(rules(new_conn_rate=50, new_conn_burst=100)))
    for port in (80, 443, 22, 25, 7070):
        assert await fence.state(POLITE, port) == "open", port
    assert await fence.state(POLITE, 9999) == "timeout"
    assert await fence.state(ATTACKER, 80) == "open"
    assert await fence.state(ATTACKER, 22) == "open"  # SSH from anywhere
    assert await fence.state(ATTACKER, 7070) == "timeout"  # API: allowed sources only
    ping = run(
        "ip", "netns", "exec", fence.client, "busybox", "ping", "-c", "1", "-W", "2", SERVER,
        check=False,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    counters = await fence.nft.counters()
    assert counters["api_denied"].packets >= 1
    assert counters["input_default"].packets >= 1  # the 9999 SYN


async def test_burst_of_new_connections_is_dropped_polite_client_unaffected(
    fence: Fence,
) -> None:
    rate, burst_size, attempts = 5, 10, 60
    await fence.nft.load(render(rules(new_conn_rate=rate, new_conn_burst=burst_size)))

    async def polite() -> list[str]:
        states = []
        for _ in range(5):
            states.append(await fence.state(POLITE, 80))
            await asyncio.sleep(0.3)
        return states

    polite_task = asyncio.create_task(polite())
    started = time.monotonic()
    states = await fence.burst(ATTACKER, 80, attempts, timeout=0.6)
    took = time.monotonic() - started
    polite_states = await polite_task
    opened, dropped = states.count("open"), states.count("timeout")
    print(f"\nburst: {attempts} SYNs from one source in {took:.2f}s: {opened} accepted, "
          f"{dropped} dropped (rate {rate}/s, burst {burst_size})")  # fmt: skip
    assert opened + dropped == attempts
    assert burst_size <= opened <= burst_size + rate * 2  # the burst, plus refills
    assert dropped >= attempts - burst_size - rate * 2
    assert polite_states == ["open"] * 5
    counters = await fence.nft.counters()
    assert counters["rate_limited"].packets >= dropped
    # Other ports of the same source are not affected (SSH is never limited).
    assert await fence.state(ATTACKER, 22) == "open"


async def test_concurrent_connections_per_source_are_capped(fence: Fence) -> None:
    cap = 8
    await fence.nft.load(render(rules(max_conn_per_source=cap)))
    held: list[socket.socket] = []
    try:
        for _ in range(cap):
            state, sock = await fence.connect(ATTACKER, 80)
            assert state == "open"
            assert sock is not None
            held.append(sock)
        assert await fence.state(ATTACKER, 80) == "refused"  # reset, not a silent drop
        assert await fence.state(POLITE, 80) == "open"
        assert (await fence.nft.counters())["conn_limited"].packets >= 1
        for sock in held[:2]:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        del held[:2]
        for _ in range(50):  # closed connections leave the count
            if await fence.state(ATTACKER, 80) == "open":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("closing connections did not free the per-source count")
    finally:
        for sock in held:
            sock.close()


async def test_reapply_is_atomic_and_idempotent(fence: Fence) -> None:
    nft = fence.nft
    one = render(rules())
    two = render(rules(bridges=("br-0123456789ab",)))  # a real replacement, same ports
    await nft.load(one)
    before = await nft.listing()
    state, held = await fence.connect(POLITE, 80)
    assert state == "open"
    assert held is not None
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(held, 16), 2) == b"ok\n"

    reloading = True
    wrong: list[str] = []
    probes = {"80": 0, "9999": 0}

    async def probe_allowed() -> None:
        while reloading:
            probes["80"] += 1
            if (state := await fence.state(POLITE, 80, timeout=0.5)) != "open":
                wrong.append(f"80 {state}")

    async def probe_hidden() -> None:
        while reloading:
            probes["9999"] += 1
            if (state := await fence.state(POLITE, 9999, timeout=0.1)) != "timeout":
                wrong.append(f"9999 {state}")

    async def spawner() -> None:  # a new hidden-port probe every 5 ms
        tasks = []
        while reloading:
            tasks.append(asyncio.create_task(probe_hidden()))
            await asyncio.sleep(0.005)
            if len(tasks) >= 100:
                break
        await asyncio.gather(*tasks)

    probers = [asyncio.create_task(probe_allowed()) for _ in range(3)]
    probers.append(asyncio.create_task(spawner()))
    try:
        for i in range(30):
            await nft.load(two if i % 2 else one)
    finally:
        reloading = False
        await asyncio.gather(*probers)
    assert not wrong, wrong
    assert probes["80"] >= 10 and probes["9999"] >= 30, probes
    # The established connection lived through 30 replacements.
    try:
        await loop.sock_sendall(held, b"ping")
        assert await asyncio.wait_for(loop.sock_recv(held, 16), 2) == b"ping"
    finally:
        held.close()
    # Same text → same table, and the listing shows no difference.
    await nft.load(one)
    assert await nft.listing() == before


async def test_keeper_repairs_the_table_and_leaves_other_tables_alone(fence: Fence) -> None:
    server, nft = fence.server, fence.nft
    # A table that is not ours (Docker's own live in ip filter / ip nat).
    other = "table ip other {\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n"
    other += "\t\tpolicy accept;\n\t\tip daddr 10.200.0.1 counter\n\t}\n}\n"
    in_ns(server, "sh", "-c", f"printf '%s' '{other}' | nft -f -")
    other_listing = in_ns(server, "nft", "-s", "list", "table", "ip", "other")

    class Bridges:
        names = ["br-aaaaaaaaaaaa"]

        async def list_bridges(self) -> list[str]:
            return list(self.names)

    config = Config(
        proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 80),)),
        tls=TlsConfig(https_listen=()),
        firewall=FirewallConfig(enabled=True, check_interval_s=0.2),
    )
    keeper = FirewallKeeper(config, Bridges(), nft)
    assert await keeper.sync() == SyncResult.APPLIED
    assert await keeper.sync() == SyncResult.UNCHANGED
    # Traffic changes counters and limiter sets, not the (stateless, terse) listing.
    for _ in range(3):
        assert await fence.state(ATTACKER, 80) == "open"
    assert await keeper.sync() == SyncResult.UNCHANGED

    in_ns(server, "nft", "add", "rule", "inet", "patrd", "input", "tcp", "dport", "9999", "accept")
    assert await fence.state(ATTACKER, 9999) == "open"
    assert await keeper.sync() == SyncResult.APPLIED  # edited by hand → replaced
    assert await fence.state(ATTACKER, 9999) == "timeout"

    Bridges.names.append("br-bbbbbbbbbbbb")
    assert await keeper.sync() == SyncResult.APPLIED
    assert '"br-bbbbbbbbbbbb"' in (await nft.listing() or "")

    # The periodic check brings a deleted table back (nftables.service restart,
    # a flushed ruleset, …) within an interval.
    task = asyncio.create_task(keeper.run())
    try:
        in_ns(server, "nft", "delete", "table", "inet", "patrd")
        assert await fence.state(ATTACKER, 9999) == "open"

        async def restored() -> bool:
            return await nft.listing() is not None

        await until(restored, 5, "the table restored by the periodic check")
        assert await fence.state(ATTACKER, 9999) == "timeout"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    status = await keeper.status()
    assert status.applied and status.loads == 4
    assert status.counters["input_default"].packets >= 1
    assert in_ns(server, "nft", "-s", "list", "table", "ip", "other") == other_listing

    # Disabled: the keeper removes its own table, and only that.
    disabled = FirewallKeeper(Config(), Bridges(), nft)
    assert await disabled.sync() == SyncResult.REMOVED
    assert await nft.listing() is None
    assert in_ns(server, "nft", "-s", "list", "table", "ip", "other") == other_listing


@pytest.fixture
def scratch_ns() -> Iterator[str]:
    with netns("ptdg") as ns:
        yield ns


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("firewall-*.nft")))
async def test_golden_files_load(scratch_ns: str, golden: str) -> None:
    nft = Nft(("ip", "netns", "exec", scratch_ns, "nft"))
    text = (GOLDEN / golden).read_text()
    await nft.load(text)
    listing = await nft.listing()
    assert listing is not None and "chain input" in listing and "chain forward" in listing
