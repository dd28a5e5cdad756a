"""The swarm node's fence: ``table inet patrd_agent``, rendered by pure code.

On the swarm backend every instance publishes its target port(s) in host
mode on an ephemeral port of its node, and patrd's proxy on the manager
dials ``node_address:published_port``. ``patrd agent --fence-allow CIDR,...``
keeps this table on its node so those ports answer only the allowed sources
(the manager's address). :mod:`patrd.firewall.node_fence_keeper` loads it.

What the table does (``docs/design.md``, "Swarm: fencing the workers'
published ports", has the reasons and the measurement):

* one chain on the **prerouting** hook at priority **mangle** (-150): after
  conntrack (-200), so established and related traffic is told apart, and
  before Docker's DNAT (nat PREROUTING, dstnat -100), so the destination
  port is still the published one;
* loopback and established/related packets pass; allowed sources pass;
* a new TCP connection to a local address (``fib daddr type local``) on a
  port in the set ``published`` is dropped (named counter ``fenced``);
* everything else (SSH, the agent's own port, Swarm's ports, other tables'
  traffic) passes untouched: the chain's policy is ``accept``.

Only this table is the agent's; loading it never touches another table
(Docker's, ``table inet patrd``) and never flushes the ruleset.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from patrd.firewall.table_hash import hash_in_comment, rules_hash

__all__ = [
    "COMMENT_PREFIX",
    "TABLE",
    "TABLE_FAMILY",
    "TABLE_NAME",
    "Network",
    "NodeFence",
    "parse_allow",
    "render",
    "rules_hash_of",
]

TABLE_FAMILY: Final = "inet"
TABLE_NAME: Final = "patrd_agent"
TABLE: Final = f"{TABLE_FAMILY} {TABLE_NAME}"
COMMENT_PREFIX: Final = "managed by patrd agent, do not edit; rules "
# The chain's priority: after conntrack (-200), before Docker's DNAT (dstnat, -100).
PRIORITY: Final = "mangle"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class NodeFence:
    """Everything the table depends on; :func:`render` is a pure function of it."""

    allow: tuple[Network, ...]  # sources that reach the published ports
    ports: tuple[int, ...] = ()  # this node's patrd task containers' published TCP ports

    def __post_init__(self) -> None:
        if not self.allow:
            raise ValueError("a fence needs at least one allowed source")
        for port in self.ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} out of range 1..65535")


def parse_allow(text: str) -> tuple[Network, ...]:
    """``"10.0.0.1,2001:db8::/64"`` → networks (an address is its /32 or /128).

    Raises ValueError naming the bad item.
    """
    found: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    if not found:
        raise ValueError("no address given")
    return tuple(found)


def render(fence: NodeFence) -> str:
    """The text of ``table inet patrd_agent { … }``, loadable with ``nft -f``.

    Deterministic: equal fences give byte-equal text (ports and networks
    sorted, duplicates removed). The table comment carries a hash of the
    body, so the keeper can tell whether the kernel holds what it would load.
    """
    body = _body(fence)
    return (
        "# patrd agent's fence (patrd/firewall/node_fence.py). Only this table is the agent's;\n"
        "# it never touches other tables (Docker's, patrd's) and never flushes the ruleset.\n"
        f"table {TABLE} {{\n"
        f'\tcomment "{COMMENT_PREFIX}{rules_hash(body)}"\n'
        f"{body}"
        "}\n"
    )


def rules_hash_of(text: str) -> str | None:
    """The rules hash in a rendered or listed table's comment, if any."""
    return hash_in_comment(text, COMMENT_PREFIX)


def _body(fence: NodeFence) -> str:
    # Collapsed: an anonymous interval set refuses overlapping networks.
    v4 = _text(
        ipaddress.collapse_addresses(n for n in fence.allow if isinstance(n, ipaddress.IPv4Network))
    )
    v6 = _text(
        ipaddress.collapse_addresses(n for n in fence.allow if isinstance(n, ipaddress.IPv6Network))
    )
    ports = sorted(set(fence.ports))
    lines = ["\tcounter fenced {", "\t}", ""]
    lines.append("\tset published {")
    lines.append("\t\ttype inet_service")
    if ports:
        lines.append(f"\t\telements = {{ {', '.join(map(str, ports))} }}")
    lines += ["\t}", ""]
    rules = [
        f"type filter hook prerouting priority {PRIORITY}; policy accept;",
        'iif "lo" accept',
        "ct state established,related accept",
        "# The allowed sources (patrd agent --fence-allow).",
    ]
    if v4:
        rules.append(f"ip saddr {_anon(v4)} accept")
    if v6:
        rules.append(f"ip6 saddr {_anon(v6)} accept")
    rules += [
        "# Anyone else: no new connection to a published port of a patrd task on this node.",
        'fib daddr type local tcp dport @published counter name "fenced" drop',
    ]
    lines += ["\tchain prerouting {", *(f"\t\t{rule}" for rule in rules), "\t}"]
    return "".join(line + "\n" for line in lines)


def _text(networks: Iterable[Network]) -> list[str]:
    return [str(n.network_address) if _is_host(n) else str(n) for n in networks]


def _is_host(network: Network) -> bool:
    return network.prefixlen == network.max_prefixlen


def _anon(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
