"""The agent's fence (``table inet patrd_agent``): the pure renderer, the allow-list
parser, the published ports of a container list, and the keeper's decisions over
a fake ``nft`` (the real kernel: tests/integration/test_swarm_fence.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from patrd.cli.serve import daemon_main
from patrd.engine.labels import LABEL_MANAGED
from patrd.engine.swarm_node import SWARM_TASK_LABEL, published_tcp_ports, task_containers
from patrd.firewall.apply import FirewallError, Nft
from patrd.firewall.node_fence import (
    TABLE,
    NodeFence,
    parse_allow,
    render,
    rules_hash_of,
)
from patrd.firewall.node_fence_keeper import NodeFenceKeeper, SyncResult, fence_nft
from patrd.firewall.rules import transaction
from patrd.model.errors import EngineError

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network
DROP = 'fib daddr type local tcp dport @published counter name "fenced" drop'

# (allow, ports) → lines the table must hold, lines it must not.
RENDER_CASES: list[tuple[str, str, tuple[int, ...], list[str], list[str]]] = [
    (
        "one address, no tasks yet",
        "10.0.0.1",
        (),
        ["ip saddr 10.0.0.1 accept", DROP],
        ["elements", "ip6 saddr"],
    ),
    (
        "ports sorted and deduplicated",
        "10.0.0.1",
        (30001, 30000, 30001),
        ["elements = { 30000, 30001 }"],
        [],
    ),
    (
        "overlapping networks collapsed (an interval set refuses overlaps)",
        "10.1.2.3,10.0.0.0/8,10.2.0.0/16",
        (32768,),
        ["ip saddr 10.0.0.0/8 accept"],
        ["10.1.2.3", "10.2.0.0"],
    ),
    (
        "two v4 networks: an anonymous set",
        "192.168.1.0/24,10.0.0.1",
        (32768,),
        ["ip saddr { 10.0.0.1, 192.168.1.0/24 } accept"],
        [],
    ),
    (
        "IPv6 only: v4 sources have no exception",
        "2001:db8::/64",
        (32768,),
        ["ip6 saddr 2001:db8::/64 accept", DROP],
        ["ip saddr"],
    ),
    (
        "both families",
        "10.0.0.1,2001:db8::1",
        (32768,),
        ["ip saddr 10.0.0.1 accept", "ip6 saddr 2001:db8::1 accept"],
        [],
    ),
]


@pytest.mark.parametrize(
    ("allow", "ports", "present", "absent"),
    [case[1:] for case in RENDER_CASES],
    ids=[case[0] for case in RENDER_CASES],
)
def test_render(allow: str, ports: tuple[int, ...], present: list[str], absent: list[str]) -> None:
    text = render(NodeFence(allow=parse_allow(allow), ports=ports))
    lines = [line.strip() for line in text.splitlines()]
    for want in present:
        assert any(want in line for line in lines), (want, text)
    for unwanted in absent:
        assert not any(unwanted in line for line in lines), (unwanted, text)
    # The frame every fence has: its own table, the hook before Docker's DNAT,
    # loopback and established traffic untouched before any drop, policy accept.
    assert [line for line in lines if line.startswith("table ")] == [f"table {TABLE} {{"]
    chain = lines.index("chain prerouting {")
    assert lines[chain + 1] == "type filter hook prerouting priority mangle; policy accept;"
    assert lines[chain + 2] == 'iif "lo" accept'
    assert lines[chain + 3] == "ct state established,related accept"
    assert lines[-3] == DROP  # the last rule; nothing else is ever dropped
    rules = [line for line in lines if not line.startswith("#")]
    assert not [r for r in rules if "flush" in r or "delete" in r]
    assert [r for r in rules if r.endswith(" drop")] == [DROP]


def test_render_is_deterministic_and_hashed() -> None:
    a = render(NodeFence(allow=parse_allow("10.0.0.1,10.0.0.2"), ports=(2, 1)))
    b = render(NodeFence(allow=parse_allow("10.0.0.2, 10.0.0.1"), ports=(1, 2, 2)))
    c = render(NodeFence(allow=parse_allow("10.0.0.1,10.0.0.2"), ports=(1, 2, 3)))
    assert a == b
    assert rules_hash_of(a) is not None and rules_hash_of(a) == rules_hash_of(b)
    assert rules_hash_of(a) != rules_hash_of(c)  # a port more is a change to load
    assert rules_hash_of("table inet patrd_agent {}") is None


def test_transaction_replaces_only_the_agents_table() -> None:
    text = render(NodeFence(allow=parse_allow("10.0.0.1")))
    batch = transaction(text, TABLE)
    assert batch.startswith("table inet patrd_agent\ndelete table inet patrd_agent\n")
    assert "inet patrd\n" not in batch and "inet patrd " not in batch


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1", (V4("10.0.0.1/32"),)),
        (" 10.0.0.0/8 , 2001:db8::/64 ", (V4("10.0.0.0/8"), V6("2001:db8::/64"))),
        ("10.0.0.5/24", (V4("10.0.0.0/24"),)),  # host bits dropped, as in firewall.api_allow
        ("10.0.0.1,,", (V4("10.0.0.1/32"),)),
    ],
)
def test_parse_allow(text: str, want: tuple[Any, ...]) -> None:
    assert parse_allow(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no address given"),
        (" , ", "no address given"),
        ("10.0.0.1,manager", "'manager' is not an IP address or CIDR network"),
        ("10.0.0.300", "'10.0.0.300' is not"),
    ],
)
def test_parse_allow_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_allow(text)


def test_a_fence_needs_sources_and_real_ports() -> None:
    with pytest.raises(ValueError, match="at least one allowed source"):
        NodeFence(allow=())
    with pytest.raises(ValueError, match="port 0 out of range"):
        NodeFence(allow=parse_allow("10.0.0.1"), ports=(0,))


@pytest.mark.parametrize(
    ("ports", "want"),
    [
        ([], ()),
        (
            [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
            ],
            (32768,),
        ),
        ([{"PrivatePort": 80, "Type": "tcp"}], ()),  # exposed, not published
        ([{"PrivatePort": 53, "PublicPort": 30053, "Type": "udp"}], ()),
        (
            [
                {"PrivatePort": 81, "PublicPort": 32770, "Type": "tcp"},
                {"PrivatePort": 80, "PublicPort": 32769, "Type": "tcp"},
            ],
            (32769, 32770),
        ),
    ],
)
def test_published_tcp_ports(ports: list[dict[str, Any]], want: tuple[int, ...]) -> None:
    assert published_tcp_ports(ports) == want


def test_task_containers_carry_their_published_ports() -> None:
    summary = {
        "Id": "c1",
        "State": "running",
        "Labels": {SWARM_TASK_LABEL: "t1", LABEL_MANAGED: "true"},
        "Ports": [{"PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"}],
    }
    (task,) = task_containers([summary])
    assert task.ports == (32768,)


# --- the keeper ------------------------------------------------------------------


class FakeNft(Nft):
    """The kernel's table as a string."""

    def __init__(self) -> None:
        super().__init__(("nft-not-run",))
        self.table: str | None = None
        self.loads = 0
        self.fail: str | None = None

    async def load(self, text: str) -> None:
        if self.fail:
            raise FirewallError(self.fail)
        self.table = text
        self.loads += 1

    async def listing(self) -> str | None:
        return self.table

    async def delete(self) -> bool:
        gone, self.table = self.table is not None, None
        return gone


class Ports:
    def __init__(self, *ports: int) -> None:
        self.ports = list(ports)
        self.down = False

    async def published_ports(self) -> list[int]:
        if self.down:
            raise EngineError("Docker unreachable")
        return list(self.ports)


ALLOW = parse_allow("10.0.0.1")


async def test_keeper_loads_follows_tasks_and_keeps_ports_when_docker_is_down() -> None:
    nft, ports = FakeNft(), Ports(32768)
    keeper = NodeFenceKeeper(ALLOW, ports, nft)
    assert await keeper.sync() == SyncResult.APPLIED
    assert nft.table is not None and "elements = { 32768 }" in nft.table
    assert await keeper.sync() == SyncResult.UNCHANGED
    ports.ports.append(32769)  # a task started
    assert await keeper.sync() == SyncResult.APPLIED
    assert "elements = { 32768, 32769 }" in nft.table
    ports.down = True  # Docker not answering: the last known ports stay fenced
    assert await keeper.sync() == SyncResult.UNCHANGED
    ports.down, ports.ports = False, []  # every task gone
    assert await keeper.sync() == SyncResult.APPLIED
    assert "elements" not in nft.table
    assert nft.loads == 3


async def test_keeper_repairs_a_table_edited_or_deleted_by_hand() -> None:
    nft = FakeNft()
    keeper = NodeFenceKeeper(ALLOW, Ports(32768), nft)
    await keeper.sync()
    assert nft.table is not None
    nft.table = nft.table.replace('iif "lo" accept', "")  # same comment, other rules
    assert await keeper.sync() == SyncResult.APPLIED
    nft.table = None
    assert await keeper.sync() == SyncResult.APPLIED
    assert nft.loads == 3


async def test_keeper_raises_when_nft_refuses() -> None:
    nft = FakeNft()
    nft.fail = "nft refused the ruleset: Error: Could not process rule"
    keeper = NodeFenceKeeper(ALLOW, Ports(32768), nft)
    with pytest.raises(FirewallError, match="Could not process rule"):
        await keeper.sync()


async def test_without_an_allow_list_a_leftover_fence_is_removed_and_nothing_loaded() -> None:
    nft = FakeNft()
    await NodeFenceKeeper(ALLOW, Ports(32768), nft).sync()
    keeper = NodeFenceKeeper((), Ports(32768), nft)
    assert not keeper.enabled
    assert await keeper.sync() == SyncResult.REMOVED
    assert nft.table is None
    assert await keeper.sync() == SyncResult.DISABLED
    nft.table = "table inet patrd_agent {\n}\n"  # not ours (no comment): left alone
    assert await keeper.sync() == SyncResult.DISABLED
    assert nft.table is not None


def test_fence_nft_names_only_the_agents_table() -> None:
    nft = fence_nft(("ip", "netns", "exec", "x", "nft"))
    assert (nft.family, nft.name) == ("inet", "patrd_agent")
    assert nft.command == ("ip", "netns", "exec", "x", "nft")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fence-allow", "10.0.0.1,manager"], "--fence-allow: 'manager' is not an IP address"),
        (["--fence-allow", ""], "--fence-allow: no address given"),
        (["--fence-allow", "10.0.0.1", "--fence-interval", "0"], "--fence-interval must be more"),
    ],
)
def test_agent_refuses_a_bad_fence_flag(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o600)
    assert daemon_main(["agent", "--token-file", str(token), *args]) == 2
    assert message in capsys.readouterr().out
