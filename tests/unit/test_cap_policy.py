"""The capability / pids policy (patrd/engine/cap_policy.py) and its [security] config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patrd.engine.cap_policy import (
    DEFAULT_ALLOWED_CAPABILITIES,
    NEVER_FROM_API,
    SecurityPolicy,
    check,
    held_violations,
    parse_policy,
)
from patrd.model.capabilities import KNOWN_CAPABILITIES
from patrd.model.errors import ConfigError, SpecError
from patrd.model.spec import SecuritySpec, parse_create
from patrd.settings import config as config_mod

POLICY = SecurityPolicy()


def sec(*caps: str, pids: int | None = None) -> SecuritySpec:
    return SecuritySpec(extra_capabilities=tuple(caps), pids_limit=pids)


@pytest.mark.parametrize(
    ("security", "field", "words"),
    [
        (sec("SYS_ADMIN"), "security.extra_capabilities[0]", "never granted"),
        (sec("NET_RAW", "DAC_READ_SEARCH"), "security.extra_capabilities[1]", "never granted"),
        (sec("SYS_MODULE"), "security.extra_capabilities[0]", "never granted"),
        (sec("NET_ADMIN"), "security.extra_capabilities[0]", "never granted"),
        (sec("IPC_LOCK"), "security.extra_capabilities[0]", "security.allowed_capabilities"),
        (sec("SYS_NICE"), "security.extra_capabilities[0]", '"SYS_NICE"'),
        (sec(pids=0), "security.pids_limit", "0 (no limit) is not accepted"),
        (sec(pids=10), "security.pids_limit", "from 64 to 32768"),
        (sec(pids=1_000_000), "security.pids_limit", "out of bounds"),
    ],
)
def test_refused_with_the_field_named(security: SecuritySpec, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        check(security, POLICY)
    assert info.value.field == field
    assert words in info.value.message


@pytest.mark.parametrize(
    "security",
    [
        sec(),
        sec(*DEFAULT_ALLOWED_CAPABILITIES),
        sec("NET_RAW", pids=64),
        sec(pids=32768),
        sec(pids=None),
    ],
)
def test_allowed(security: SecuritySpec) -> None:
    check(security, POLICY)
    assert held_violations(security, POLICY) == []


def test_never_list_is_known_and_disjoint_from_defaults() -> None:
    assert NEVER_FROM_API <= KNOWN_CAPABILITIES
    assert not NEVER_FROM_API & set(DEFAULT_ALLOWED_CAPABILITIES)
    assert {"SYS_ADMIN", "DAC_READ_SEARCH", "SYS_MODULE", "SYS_PTRACE", "BPF"} <= NEVER_FROM_API


def test_operator_widens_the_list_but_never_past_the_fence() -> None:
    policy = parse_policy({"allowed_capabilities": ["cap_ipc_lock", "SYS_NICE"]})
    check(sec("IPC_LOCK", "SYS_NICE"), policy)
    with pytest.raises(SpecError):  # no longer in the (replaced) list
        check(sec("NET_RAW"), policy)
    for cap in sorted(NEVER_FROM_API):
        with pytest.raises(ConfigError) as info:
            parse_policy({"allowed_capabilities": ["NET_RAW", cap]})
        assert info.value.key == "security.allowed_capabilities[1]"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"allowed_capabilities": "NET_RAW"}, "security.allowed_capabilities"),
        ({"allowed_capabilities": ["NOPE"]}, "security.allowed_capabilities[0]"),
        ({"allowed_capabilities": [1]}, "security.allowed_capabilities[0]"),
        ({"pids_min": 0}, "security.pids_min"),
        ({"pids_max": True}, "security.pids_max"),
        ({"pids_min": 500, "pids_max": 100}, "security.pids_min"),
        ({"pids_limit": 5}, "security.pids_limit"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(table)
    assert info.value.key == key


def test_config_file_section(tmp_path: Path) -> None:
    parsed = config_mod.parse(
        {"security": {"allowed_capabilities": ["NET_RAW"], "pids_min": 16, "pids_max": 100}},
        base_dir=tmp_path,
    )
    assert parsed.security == SecurityPolicy(frozenset({"NET_RAW"}), 16, 100)
    assert config_mod.parse({}, base_dir=tmp_path).security == SecurityPolicy()


def test_held_capability_must_be_dropped_by_the_next_change() -> None:
    before = sec("SYS_ADMIN", "NET_RAW", pids=0)
    assert held_violations(before, POLICY) == ["capability SYS_ADMIN", "pids_limit 0"]
    with pytest.raises(SpecError) as info:
        check(before, POLICY, before=before)
    assert info.value.field == "security.extra_capabilities[0]"
    assert "drop it in this change" in info.value.message
    check(sec("NET_RAW"), POLICY, before=before)


def test_the_issue_body_is_refused_on_create() -> None:
    body = {
        "name": "xy",
        "image": "nginx",
        "ports": {"80": "http"},
        "security": {"extra_capabilities": ["SYS_ADMIN", "DAC_READ_SEARCH", "SYS_MODULE"]},
    }
    parsed = parse_create(body, region="local")  # the names exist...
    with pytest.raises(SpecError) as info:  # ...the policy refuses them
        check(parsed.security, POLICY, body=body)
    assert info.value.field == "security.extra_capabilities[0]"
    assert info.value.message.startswith("SYS_ADMIN ")


def test_the_index_is_the_clients() -> None:
    body = {"security": {"extra_capabilities": ["net_raw", "CAP_SYS_PTRACE"]}}
    with pytest.raises(SpecError) as info:
        check(sec("NET_RAW", "SYS_PTRACE"), POLICY, body=body)
    assert info.value.field == "security.extra_capabilities[1]"
    body = {"security": {"extra_capabilities": ["SYS_PTRACE", "NET_RAW"]}}
    with pytest.raises(SpecError) as info:
        check(sec("NET_RAW", "SYS_PTRACE"), POLICY, body=body)
    assert info.value.field == "security.extra_capabilities[0]"
