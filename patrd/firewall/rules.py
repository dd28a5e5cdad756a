"""The nftables ruleset patrd owns: ``table inet patrd``, rendered from state by pure code.

Nothing here runs ``nft``; :mod:`patrd.firewall.apply` loads the text this
module renders (one ``nft -f -`` transaction) and reads counters back.

What the table does (``docs/design.md``, "Fences", has the reasons):

* **input** (packets for this host; priority ``filter``, after nothing of
  Docker's since Docker filters ``forward``): loopback, established/related
  traffic, ICMP/ICMPv6 essentials and the SSH port are always accepted;
  containers never reach the API port or link-local metadata addresses; the
  API's TCP port is open to the configured sources only; the proxy ports
  are open with per-source limits on new connections (rate with burst, and
  concurrent connections); extra ports as configured; everything else meets
  the configured default policy (``drop`` recommended).
* **forward** (priority ``filter - 1``, before Docker's own chains):
  defence in depth beside Docker's bridge isolation: a deployment's bridge
  may not forward to another Docker bridge, and no container reaches
  169.254.0.0/16 (or the IPv6 metadata address).

Every drop goes through a named counter (``COUNTERS``) so the API can
expose them. The table carries a comment with a hash of its rules: the
applier compares it with what it would load and re-applies only on a
difference (so counters and limiter state survive a no-op check).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from patrd.firewall.table_hash import hash_in_comment, rules_hash
from patrd.model import checks as c
from patrd.model.listen import Listen
from patrd.model.sections import setting
from patrd.registry.node import RegistryConfig

__all__ = [
    "COUNTERS",
    "TABLE",
    "FirewallConfig",
    "FirewallRules",
    "HostConfig",
    "Policy",
    "render",
    "rules_from_config",
    "rules_hash",
    "transaction",
]


@dataclass(frozen=True)
class FirewallConfig:
    """``[firewall]``: patrd's nftables table (this module)."""

    enabled: bool = setting(False, c.boolean(), "load patrd's nftables table")
    ssh_port: int = setting(22, c.integer(1, 65535), "always open")
    input_policy: str = setting(
        "drop", c.choice(("drop", "accept")), "what meets a packet nothing accepted"
    )
    api_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        (), c.networks(), "sources that reach api.tcp_listen"
    )
    allow_tcp: tuple[int, ...] = setting((), c.ports(), "more TCP ports open to all")
    allow_udp: tuple[int, ...] = setting((), c.ports(), "more UDP ports open to all")
    new_conn_rate: int = setting(
        50, c.integer(0), "proxy: new connections per second per source (IPv6: /64)"
    )
    new_conn_burst: int = setting(100, c.integer(1), "proxy: burst of new connections")
    max_conn_per_source: int = setting(
        256, c.integer(0), "proxy: concurrent connections per source (0: no limit)"
    )
    check_interval_s: float = setting(10.0, c.positive(), "how often the table is checked")


# The parts of the daemon config (patrd/settings/config.py) the rules read.
class _ProxyPart(Protocol):
    @property
    def http_listen(self) -> tuple[Listen, ...]: ...


class _TlsPart(Protocol):
    @property
    def https_listen(self) -> tuple[Listen, ...]: ...


class _ApiPart(Protocol):
    @property
    def tcp_listen(self) -> Listen | None: ...


class HostConfig(Protocol):
    @property
    def firewall(self) -> FirewallConfig: ...
    @property
    def proxy(self) -> _ProxyPart: ...
    @property
    def tls(self) -> _TlsPart: ...
    @property
    def api(self) -> _ApiPart: ...
    @property
    def registry(self) -> RegistryConfig: ...


TABLE: Final = "inet patrd"
TABLE_FAMILY: Final = "inet"
TABLE_NAME: Final = "patrd"
# The table comment: ``COMMENT_PREFIX + <hash>``; the applier reads it back.
COMMENT_PREFIX: Final = "managed by patrd, do not edit; rules "

# Docker's bridges: the default one and user-defined ones ("br-" + network id).
DOCKER_BRIDGES: Final = ("br-*", "docker0")
METADATA_V4: Final = "169.254.0.0/16"
METADATA_V6: Final = "fd00:ec2::254"  # AWS's IPv6 instance metadata address
# Limiter entries of a source expire after this long without new connections.
LIMITER_TIMEOUT_S: Final = 60
LIMITER_SIZE: Final = 65536
# IPv6 sources are limited per /64: one subscriber usually holds a whole /64.
IPV6_SOURCE_MASK: Final = "ffff:ffff:ffff:ffff::"
ICMP_ECHO_RATE: Final = "10/second burst 20 packets"

# Named counters, in the order they appear in the table.
COUNTERS: Final = (
    "rate_limited",  # new proxy connections over the per-source rate
    "conn_limited",  # new proxy connections over the per-source concurrent cap
    "api_denied",  # connections to the API port from a source not allowed
    "container_denied",  # containers → API port, or → link-local metadata
    "isolation_denied",  # a deployment's bridge → another Docker bridge
    "invalid",  # conntrack state invalid
    "input_default",  # reached the default input policy
)


class Policy(StrEnum):
    DROP = "drop"
    ACCEPT = "accept"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class FirewallRules:
    """Everything the ruleset depends on; ``render`` is a pure function of it."""

    policy: Policy = Policy.DROP
    ssh_port: int = 22
    proxy_ports: tuple[int, ...] = (80, 443)  # public, rate limited
    api_port: int | None = None  # the API's TCP port, if it listens on TCP
    api_allow: tuple[Network, ...] = ()  # sources allowed to reach api_port
    allow_tcp: tuple[int, ...] = ()  # extra open TCP ports (not limited)
    allow_udp: tuple[int, ...] = ()
    new_conn_rate: int = 50  # new connections per second per source; 0: no limit
    new_conn_burst: int = 100
    max_conn_per_source: int = 256  # concurrent connections per source; 0: no limit
    bridges: tuple[str, ...] = ()  # Linux bridge names of patrd's deployment networks

    def __post_init__(self) -> None:
        for port in (self.ssh_port, *self.proxy_ports, *self.allow_tcp, *self.allow_udp):
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} out of range 1..65535")
        if self.api_port is not None and not 1 <= self.api_port <= 65535:
            raise ValueError(f"api port {self.api_port} out of range 1..65535")
        for name in self.bridges:
            # Interface names are at most 15 bytes; quoting must stay trivial.
            if not name or len(name) > 15 or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"bad bridge interface name {name!r}")
        if self.new_conn_rate < 0 or self.new_conn_burst < 0 or self.max_conn_per_source < 0:
            raise ValueError("limits must not be negative")


def rules_from_config(config: HostConfig, bridges: Iterable[str] = ()) -> FirewallRules:
    """The rules for this daemon's config and its deployments' bridges."""
    f = config.firewall
    # Proxy listeners bound to loopback need no open port.
    listens = [*config.proxy.http_listen, *config.tls.https_listen]
    proxy_ports = tuple(x.port for x in listens if x.port and not _is_loopback(x.host))
    tcp = config.api.tcp_listen
    api_port = tcp.port if tcp is not None and tcp.port else None
    # The node registry, when it listens beyond loopback, is for pushes
    # from elsewhere (CI): open like allow_tcp. Its access control is its htpasswd.
    registry = config.registry
    extra = (
        (registry.listen.port,)
        if registry.enabled and not _is_loopback(registry.listen.host)
        else ()
    )
    return FirewallRules(
        policy=Policy(f.input_policy),
        ssh_port=f.ssh_port,
        proxy_ports=proxy_ports,
        api_port=api_port,
        api_allow=f.api_allow,
        allow_tcp=(*f.allow_tcp, *extra),
        allow_udp=f.allow_udp,
        new_conn_rate=f.new_conn_rate,
        new_conn_burst=f.new_conn_burst,
        max_conn_per_source=f.max_conn_per_source,
        bridges=tuple(sorted(set(bridges))),
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def render(rules: FirewallRules) -> str:
    """The text of ``table inet patrd { … }``, loadable with ``nft -f``.

    Deterministic: equal rules give byte-equal text (ports and bridges are
    sorted, duplicates removed).
    """
    body = _body(rules)
    digest = rules_hash(body)
    return (
        "# patrd firewall (patrd/firewall/rules.py). Only this table is patrd's; it never\n"
        "# touches other tables (Docker's) and never flushes the ruleset.\n"
        f"table {TABLE} {{\n"
        f'\tcomment "{COMMENT_PREFIX}{digest}"\n'
        f"{body}"
        "}\n"
    )


def hash_of(text: str) -> str | None:
    """The rules hash in a rendered or listed table's comment, if any."""
    return hash_in_comment(text, COMMENT_PREFIX)


def transaction(text: str, table: str = TABLE) -> str:
    """One ``nft -f`` batch that replaces table inet patrd (or ``table``) atomically.

    ``table`` (create if missing, else no-op) then ``delete table`` then the
    new table: the kernel commits all three or none, so there is no moment
    without the table, and a failing batch leaves the old table in place.
    """
    return f"table {table}\ndelete table {table}\n{text}"


# --- the body ----------------------------------------------------------------


def _body(r: FirewallRules) -> str:
    lines: list[str] = []
    for name in COUNTERS:
        lines += [f"\tcounter {name} {{", "\t}", ""]
    if r.new_conn_rate:
        lines += _set("flood4", "ipv4_addr", "dynamic, timeout", f"timeout {LIMITER_TIMEOUT_S}s; ")
        lines += _set("flood6", "ipv6_addr", "dynamic, timeout", f"timeout {LIMITER_TIMEOUT_S}s; ")
    if r.max_conn_per_source:
        lines += _set("conn4", "ipv4_addr", "dynamic", "")
        lines += _set("conn6", "ipv6_addr", "dynamic", "")
    lines += ["\tchain input {", *(f"\t\t{rule}" for rule in _input(r)), "\t}", ""]
    lines += ["\tchain forward {", *(f"\t\t{rule}" for rule in _forward(r)), "\t}"]
    return "".join(line + "\n" for line in lines)


def _set(name: str, kind: str, flags: str, extra: str) -> list[str]:
    return [f"\tset {name} {{ type {kind}; flags {flags}; {extra}size {LIMITER_SIZE}; }}", ""]


def _input(r: FirewallRules) -> list[str]:
    bridges = _anon(f'"{b}"' for b in DOCKER_BRIDGES)
    proxy = _ports(r.proxy_ports)
    rules = [
        f"type filter hook input priority filter; policy {r.policy.value};",
        'iif "lo" accept',
        'ct state invalid counter name "invalid" drop',
        "ct state established,related accept",
        "# Containers never reach patrd's API or link-local metadata on this host.",
    ]
    if r.api_port is not None:
        rules.append(
            f'iifname {bridges} tcp dport {r.api_port} counter name "container_denied" drop'
        )
    rules += [
        f'iifname {bridges} ip daddr {METADATA_V4} counter name "container_denied" drop',
        f'iifname {bridges} ip6 daddr {METADATA_V6} counter name "container_denied" drop',
        "# ICMP essentials (errors, path MTU, neighbour discovery); pings rate limited.",
        "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept",
        f"icmp type echo-request limit rate {ICMP_ECHO_RATE} accept",
        "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, "
        "parameter-problem } accept",
        f"icmpv6 type echo-request limit rate {ICMP_ECHO_RATE} accept",
        "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } "
        "ip6 hoplimit 255 accept",
        "icmpv6 type mld-listener-query ip6 saddr fe80::/10 accept",
        "ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept",
        "# SSH: always open, never limited (never lock the owner out).",
        f"tcp dport {r.ssh_port} accept",
    ]
    if r.api_port is not None:
        v4 = [n for n in r.api_allow if n.version == 4]
        v6 = [n for n in r.api_allow if n.version == 6]
        rules.append("# The API's TCP port: configured sources only (loopback is accepted above).")
        if v4:
            rules.append(f"tcp dport {r.api_port} ip saddr {_anon(map(str, v4))} accept")
        if v6:
            rules.append(f"tcp dport {r.api_port} ip6 saddr {_anon(map(str, v6))} accept")
        rules.append(f'tcp dport {r.api_port} counter name "api_denied" drop')
    if proxy:
        rules.append("# The proxy: public, with per-source limits on new connections.")
        if r.new_conn_rate:
            limit = (
                f"timeout {LIMITER_TIMEOUT_S}s limit rate over {r.new_conn_rate}/second "
                f"burst {max(r.new_conn_burst, 1)} packets"
            )
            rules += [
                f"tcp dport {proxy} ct state new update @flood4 {{ ip saddr {limit} }} "
                'counter name "rate_limited" drop',
                f"tcp dport {proxy} ct state new update @flood6 "
                f"{{ ip6 saddr & {IPV6_SOURCE_MASK} {limit} }} "
                'counter name "rate_limited" drop',
            ]
        if r.max_conn_per_source:
            n = r.max_conn_per_source
            rules += [
                f"tcp dport {proxy} ct state new add @conn4 {{ ip saddr ct count over {n} }} "
                'counter name "conn_limited" reject with tcp reset',
                f"tcp dport {proxy} ct state new add @conn6 "
                f"{{ ip6 saddr & {IPV6_SOURCE_MASK} ct count over {n} }} "
                'counter name "conn_limited" reject with tcp reset',
            ]
        rules.append(f"tcp dport {proxy} accept")
    extra_tcp = _ports(r.allow_tcp)
    extra_udp = _ports(r.allow_udp)
    if extra_tcp or extra_udp:
        rules.append("# Extra ports from firewall.allow_tcp / allow_udp.")
    if extra_tcp:
        rules.append(f"tcp dport {extra_tcp} accept")
    if extra_udp:
        rules.append(f"udp dport {extra_udp} accept")
    rules.append('counter name "input_default"')
    return rules


def _forward(r: FirewallRules) -> list[str]:
    bridges = _anon(f'"{b}"' for b in DOCKER_BRIDGES)
    rules = [
        "type filter hook forward priority filter - 1; policy accept;",
        f'iifname {bridges} ip daddr {METADATA_V4} counter name "container_denied" drop',
        f'iifname {bridges} ip6 daddr {METADATA_V6} counter name "container_denied" drop',
    ]
    if r.bridges:
        rules.append("# Each deployment's bridge reaches no other Docker bridge.")
    for name in sorted(set(r.bridges)):
        rules.append(
            f'iifname "{name}" oifname != "{name}" oifname {bridges} '
            'counter name "isolation_denied" drop'
        )
    return rules


def _ports(ports: Iterable[int]) -> str:
    unique = sorted(set(ports))
    if not unique:
        return ""
    return str(unique[0]) if len(unique) == 1 else "{ " + ", ".join(map(str, unique)) + " }"


def _anon(items: Iterable[str]) -> str:
    values = list(dict.fromkeys(items))
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"
