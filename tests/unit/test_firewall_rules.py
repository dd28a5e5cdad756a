"""The nftables renderer (pure): golden files, determinism, config → rules.

Golden files live in ``tests/unit/golden/``. After an intended change to the
ruleset, regenerate them with ``PATRD_UPDATE_GOLDEN=1 pytest tests/unit/test_firewall_rules.py``
and review the diff like code. ``tests/integration/test_firewall_netns.py``
loads the same files into a real kernel (inside a test namespace).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from patrd.firewall.rules import (
    COUNTERS,
    FirewallRules,
    Policy,
    hash_of,
    render,
    rules_from_config,
    transaction,
)
from patrd.model.errors import ConfigError
from patrd.settings.config import (
    ApiConfig,
    Config,
    FirewallConfig,
    Listen,
    ProxyConfig,
    RegistryConfig,
    TlsConfig,
    parse,
)

GOLDEN = Path(__file__).parent / "golden"

CASES: dict[str, FirewallRules] = {
    # What a default config gives: proxy on 80 and 443, no TCP API, drop.
    "default": FirewallRules(),
    # Everything switched on: API port with v4 and v6 sources, extra ports, bridges.
    "full": FirewallRules(
        policy=Policy.DROP,
        ssh_port=2222,
        proxy_ports=(443, 80, 8080, 80),
        api_port=7070,
        api_allow=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("192.0.2.7/32"),
            ipaddress.ip_network("2001:db8::/32"),
        ),
        allow_tcp=(25, 587),
        allow_udp=(51820,),
        new_conn_rate=20,
        new_conn_burst=40,
        max_conn_per_source=64,
        bridges=("br-bbbbbbbbbbbb", "br-aaaaaaaaaaaa"),
    ),
    # Policy accept, limits off, API port without sources (loopback only).
    "accept-nolimits": FirewallRules(
        policy=Policy.ACCEPT,
        proxy_ports=(80,),
        api_port=7070,
        new_conn_rate=0,
        max_conn_per_source=0,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = render(CASES[case])
    path = GOLDEN / f"firewall-{case}.nft"
    if os.environ.get("PATRD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with PATRD_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; review and regenerate if intended"


def test_golden_files_all_have_a_case() -> None:
    names = {p.name for p in GOLDEN.glob("firewall-*.nft")}
    assert names == {f"firewall-{c}.nft" for c in CASES}


def test_render_is_deterministic_and_order_free() -> None:
    a = CASES["full"]
    b = FirewallRules(
        policy=a.policy,
        ssh_port=a.ssh_port,
        proxy_ports=tuple(reversed(a.proxy_ports)),
        api_port=a.api_port,
        api_allow=a.api_allow,
        allow_tcp=tuple(reversed(a.allow_tcp)),
        allow_udp=a.allow_udp,
        new_conn_rate=a.new_conn_rate,
        new_conn_burst=a.new_conn_burst,
        max_conn_per_source=a.max_conn_per_source,
        bridges=tuple(reversed(a.bridges)),
    )
    assert render(a) == render(b) == render(a)


def test_hash_follows_the_rules() -> None:
    one = render(FirewallRules(bridges=("br-1",)))
    two = render(FirewallRules(bridges=("br-1", "br-2")))
    assert hash_of(one) and hash_of(two)
    assert hash_of(one) != hash_of(two)
    assert hash_of(one) == hash_of(render(FirewallRules(bridges=("br-1",))))
    assert hash_of("table inet patrd {\n}\n") is None


def test_only_patrds_own_table_is_named() -> None:
    """Never flush the ruleset, never name another table (Docker's) or family."""
    for rules in CASES.values():
        batch = transaction(render(rules))
        assert batch.startswith("table inet patrd\ndelete table inet patrd\n")
        code = [line.split("#")[0] for line in batch.splitlines()]
        assert not any("flush" in line for line in code)
        tables = [line.strip() for line in code if line.strip().startswith(("table", "delete"))]
        assert set(tables) <= {"table inet patrd", "table inet patrd {", "delete table inet patrd"}


def test_safety_rules_come_first() -> None:
    """Loopback, established traffic and SSH are accepted before any drop or limit."""
    lines = [line.strip() for line in render(CASES["full"]).splitlines()]
    chain = lines[lines.index("chain input {") :]
    chain = chain[: chain.index("}")]
    ssh = chain.index("tcp dport 2222 accept")
    assert chain.index('iif "lo" accept') < ssh
    assert chain.index("ct state established,related accept") < ssh
    first_limit = next(i for i, line in enumerate(chain) if "@flood4" in line)
    assert ssh < first_limit
    assert chain[-1] == 'counter name "input_default"'


def test_every_counter_is_declared_and_used() -> None:
    text = render(CASES["full"])
    for name in COUNTERS:
        assert f"\tcounter {name} {{" in text
        assert f'counter name "{name}"' in text


def test_limits_off_leave_no_sets() -> None:
    text = render(CASES["accept-nolimits"])
    assert "@flood" not in text and "@conn" not in text and "set flood4" not in text
    assert "policy accept;" in text


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="bridge"):
        FirewallRules(bridges=('br-x"; flush ruleset; "',))
    with pytest.raises(ValueError, match="port"):
        FirewallRules(allow_tcp=(70000,))
    with pytest.raises(ValueError, match="negative"):
        FirewallRules(new_conn_rate=-1)


def test_rules_from_config() -> None:
    config = Config(
        api=ApiConfig(tcp_listen=Listen("0.0.0.0", 7070)),
        proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 80), Listen("127.0.0.1", 8080))),
        tls=TlsConfig(https_listen=(Listen("::", 443),)),
        firewall=FirewallConfig(
            enabled=True,
            ssh_port=2200,
            input_policy="accept",
            api_allow=(ipaddress.ip_network("10.1.0.0/16"),),
            new_conn_rate=7,
        ),
    )
    rules = rules_from_config(config, ["br-b", "br-a", "br-b"])
    assert rules.proxy_ports == (80, 443)  # 8080 is on loopback only
    assert rules.api_port == 7070
    assert rules.policy is Policy.ACCEPT and rules.ssh_port == 2200
    assert rules.bridges == ("br-a", "br-b")
    assert rules.new_conn_rate == 7
    assert rules_from_config(Config()).api_port is None


def test_node_registry_port_opens_only_beyond_loopback() -> None:
    public = RegistryConfig(enabled=True, listen=Listen("0.0.0.0", 5000))
    config = Config(registry=public, firewall=FirewallConfig(allow_tcp=(25,)))
    assert rules_from_config(config).allow_tcp == (25, 5000)
    local = Config(registry=RegistryConfig(enabled=True, listen=Listen("127.0.0.1", 5000)))
    assert rules_from_config(local).allow_tcp == ()
    off = Config(registry=RegistryConfig(enabled=False, listen=Listen("0.0.0.0", 5000)))
    assert rules_from_config(off).allow_tcp == ()


def test_config_firewall_section() -> None:
    config = parse(
        {
            "firewall": {
                "enabled": True,
                "ssh_port": 2222,
                "input_policy": "accept",
                "api_allow": ["10.0.0.0/8", "2001:db8::1"],
                "allow_tcp": [25],
                "allow_udp": [51820],
                "new_conn_rate": 0,
                "max_conn_per_source": 10,
                "check_interval_s": 2,
            },
            "proxy": {
                "rate_limit_rps": 0,
                "trusted_proxies": ["10.0.0.1"],
                "rate_limit_exempt": [],
                "max_connections": 5,
            },
            "docker": {"pids_limit": 64, "capabilities": ["cap_net_bind_service", "SETUID"]},
        },
        base_dir=Path("/"),
    )
    f = config.firewall
    assert f.enabled and f.ssh_port == 2222 and f.input_policy == "accept"
    assert [str(n) for n in f.api_allow] == ["10.0.0.0/8", "2001:db8::1/128"]
    assert f.allow_tcp == (25,) and f.allow_udp == (51820,)
    assert f.new_conn_rate == 0 and f.max_conn_per_source == 10 and f.check_interval_s == 2
    assert config.proxy.rate_limit_rps == 0 and config.proxy.trusted_proxies == ("10.0.0.1/32",)
    assert config.proxy.max_connections == 5 and config.proxy.rate_limit_exempt == ()
    assert config.docker.pids_limit == 64
    assert config.docker.capabilities == ("NET_BIND_SERVICE", "SETUID")


def test_config_defaults_are_safe() -> None:
    config = parse({}, base_dir=Path("/"))
    assert config.firewall.enabled is False
    assert config.firewall.input_policy == "drop" and config.firewall.ssh_port == 22
    assert config.proxy.rate_limit_rps > 0 and config.proxy.max_connections > 0
    assert "127.0.0.0/8" in config.proxy.rate_limit_exempt
    assert config.proxy.trusted_proxies == ()
    assert config.docker.pids_limit > 0 and "NET_RAW" not in config.docker.capabilities


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"firewall": {"enabled": "yes"}}, "firewall.enabled"),
        ({"firewall": {"ssh_port": 70000}}, "firewall.ssh_port"),
        ({"firewall": {"input_policy": "reject"}}, "firewall.input_policy"),
        ({"firewall": {"api_allow": ["10.0.0.0/33"]}}, "firewall.api_allow[0]"),
        ({"firewall": {"api_allow": "10.0.0.0/8"}}, "firewall.api_allow"),
        ({"firewall": {"allow_tcp": [0]}}, "firewall.allow_tcp[0]"),
        ({"firewall": {"new_conn_burst": 0}}, "firewall.new_conn_burst"),
        ({"firewall": {"colour": "red"}}, "firewall.colour"),
        ({"proxy": {"trusted_proxies": ["nope"]}}, "proxy.trusted_proxies[0]"),
        ({"proxy": {"rate_limit_rps": -1}}, "proxy.rate_limit_rps"),
        ({"docker": {"capabilities": ["CAP_FLY"]}}, "docker.capabilities[0]"),
        ({"docker": {"pids_limit": -1}}, "docker.pids_limit"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(raw, base_dir=Path("/"))
    assert info.value.key == key
