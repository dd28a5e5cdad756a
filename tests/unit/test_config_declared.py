"""Every config key is declared once (patrd/model/sections.py) and documented.

The docs are checked against the declarations rather than generated from
them: config.example.toml and the README's table carry prose, examples and
grouping that one-line docs cannot, so these tests keep the hand-written
reference complete (every declared key in config.example.toml) and honest
(every key the README's table names exists).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from patrd.model.errors import ConfigError
from patrd.model.sections import doc, keys, load_section
from patrd.settings.config import Config, Overrides, apply_overrides, parse

ROOT = Path(__file__).resolve().parents[2]
OWN_PARSERS = {"security", "notify"}  # parsed by patrd/engine/cap_policy.py, notify/config.py


def _sections() -> dict[str, type[Any]]:
    return {n: t for n, t in get_type_hints(Config).items() if n not in OWN_PARSERS}


def _declared() -> set[str]:
    return {f"{name}.{key}" for name, kind in _sections().items() for key, _ in keys(kind)}


def test_every_setting_has_a_one_line_doc() -> None:
    for name, kind in _sections().items():
        for key, f in keys(kind):
            assert doc(f) and "\n" not in doc(f), f"{name}.{key}"


def test_absent_keys_keep_the_declared_defaults() -> None:
    for name, kind in _sections().items():
        assert load_section(kind, {}, name, Path("/")) == kind(), name


def test_unknown_keys_are_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse({"logs": {"retention": 1}}, base_dir=Path("/"))
    assert err.value.key == "logs.retention"
    assert err.value.message == (
        "unknown key; known: keep_bytes_per_instance, keep_bytes_total, retention_s"
    )
    with pytest.raises(ConfigError) as err:
        parse({"backup": {"keep_everything": True}}, base_dir=Path("/"))
    assert "keep_last" in err.value.message  # flattened retention keys count as known


def test_runtime_fields_are_not_keys() -> None:
    from patrd.proxy.options import ProxyOptions

    declared = {key for key, _ in keys(ProxyOptions)}
    assert "forwarded_share" not in declared
    assert {f.name for f in fields(ProxyOptions)} - declared == {
        "forwarded_share",
        "upstream_connect_timeout_s",
        "upstream_idle_pool_size",
    }
    with pytest.raises(ConfigError, match="unknown key"):
        parse({"proxy": {"forwarded_share": 2}}, base_dir=Path("/"))


def test_the_example_config_is_valid_and_names_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    parse(tomllib.loads(text), base_dir=ROOT)
    named: set[str] = set()
    section = None
    for line in text.splitlines():
        if header := re.match(r"^#?\s*\[\[?([a-z_]+)\]\]?\s*$", line):
            section = header.group(1)
        elif (key := re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)) and section:
            named.add(f"{section}.{key.group(1)}")
    assert not _declared() - named, "declared but not in config.example.toml"


def test_the_readme_table_names_only_real_keys() -> None:
    text = (ROOT / "README.md").read_text()
    table = text.split("### Configuration", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        section = ""
        for token in re.findall(r"`([a-z_0-9.]+)`", row.split("|")[1]):
            section, _, key = token.rpartition(".") if "." in token else (section, "", token)
            named.add(f"{section}.{key}")
    assert len(named) > 50
    assert not named - _declared(), "named in the README but not a key"


# What the config said before the keys were declared once (messages frozen from
# the hand-written parser this replaced): one case per distinct message.
MESSAGES = [
    ({"daemon": 5}, "daemon", "must be a table"),
    ({"daemon": {"data_dir": -1}}, "daemon.data_dir", "must be a string"),
    ({"daemon": {"log_format": "x"}}, "daemon.log_format", "must be one of logfmt, json, console"),
    (
        {"daemon": {"log_level": "x"}},
        "daemon.log_level",
        "must be one of debug, info, warning, error",
    ),
    ({"daemon": {"region": ""}}, "daemon.region", "must be lowercase letters, digits and '-'"),
    ({"api": {"max_body_bytes": "x"}}, "api.max_body_bytes", "must be an integer"),
    ({"api": {"max_body_bytes": -1}}, "api.max_body_bytes", "must be at least 1024"),
    ({"api": {"socket_mode": "x"}}, "api.socket_mode", 'must be an octal string such as "0660"'),
    ({"proxy": {"base_domain": ""}}, "proxy.base_domain", "'' is not a DNS domain name"),
    ({"proxy": {"body_timeout_s": "x"}}, "proxy.body_timeout_s", "must be a positive number"),
    ({"proxy": {"event_loop": "x"}}, "proxy.event_loop", "must be one of uvloop, asyncio"),
    (
        {"proxy": {"http_listen": "x"}},
        "proxy.http_listen",
        'must be a non-empty list of "host:port"',
    ),
    (
        {"proxy": {"http_listen": ["a"]}},
        "proxy.http_listen[0]",
        "'a' must be host:port, e.g. 0.0.0.0:80 or [::]:80",
    ),
    ({"proxy": {"max_body_bytes": -1}}, "proxy.max_body_bytes", "must be at least 0"),
    ({"proxy": {"rate_limit_burst": -1}}, "proxy.rate_limit_burst", "must be at least 1"),
    ({"proxy": {"rate_limit_exempt": "x"}}, "proxy.rate_limit_exempt", "must be a list"),
    (
        {"proxy": {"rate_limit_exempt": ["a"]}},
        "proxy.rate_limit_exempt[0]",
        "'a' is not an IP address or network",
    ),
    ({"proxy": {"rate_limit_rps": "x"}}, "proxy.rate_limit_rps", "must be a number >= 0 (0: off)"),
    ({"proxy": {"workers": "x"}}, "proxy.workers", 'must be "auto" or an integer from 0 to 64'),
    (
        {"docker": {"capabilities": "x"}},
        "docker.capabilities",
        "must be a list of capability names",
    ),
    ({"docker": {"capabilities": ["a"]}}, "docker.capabilities[0]", "unknown capability 'a'"),
    (
        {"docker": {"network_pool": "x"}},
        "docker.network_pool",
        "'x' is not a network such as 10.213.0.0/16",
    ),
    ({"docker": {"network_prefix": -1}}, "docker.network_prefix", "must be at least 8"),
    ({"docker": {"network_prefix": 8}}, "docker.network_pool", "prefix /8 must be within /16../30"),
    ({"firewall": {"allow_tcp": ["a"]}}, "firewall.allow_tcp[0]", "must be a port number 1..65535"),
    ({"firewall": {"enabled": "x"}}, "firewall.enabled", "must be true or false"),
    ({"firewall": {"input_policy": "x"}}, "firewall.input_policy", "must be one of drop, accept"),
    ({"firewall": {"ssh_port": 65536}}, "firewall.ssh_port", "must be at most 65535"),
    (
        {"tls": {"renew_before": "x"}},
        "tls.renew_before",
        "must be a fraction of the lifetime, 0 < x <= 1",
    ),
    (
        {"acme": {"backoff_initial_s": 65536}},
        "acme.backoff_max_s",
        "must be at least acme.backoff_initial_s",
    ),
    ({"acme": {"contact_email": "x"}}, "acme.contact_email", "'x' is not an email address"),
    ({"acme": {"directory_url": "x"}}, "acme.directory_url", "must be an https:// URL"),
    ({"acme": {"public_addresses": ["a"]}}, "acme.public_addresses[0]", "must be an IP address"),
    (
        {"registry": {"poll_interval_s": "x"}},
        "registry.poll_interval_s",
        "must be 0 (off) or a positive number",
    ),
    ({"autoscale": {"tolerance": 1}}, "autoscale.tolerance", "must be below 1 (0.1 is 10%)"),
    ({"cost": {"currency": ""}}, "cost.currency", "must be a short currency code such as USD"),
    (
        {"dashboard": {"enabled": True}},
        "dashboard.admin_password_file",
        "is required when the dashboard is on",
    ),
    (
        {"dashboard": {"scope": "x"}},
        "dashboard.scope",
        "must be one of: read, deploy, write, admin",
    ),
    (
        {"disk": {"min_free": "x"}},
        "disk.min_free",
        '\'x\' is not a size ("2GiB"), a share ("5%") or both ("2GiB or 5%")',
    ),
    ({"backup": {"keep_daily": "x"}}, "backup.keep_daily", "must be an integer >= 0 (0: not used)"),
    (
        {"backup": {"schedule": "x"}},
        "backup.schedule",
        'must be "@every <duration>" (e.g. "@every 6h") or a daily "HH:MM" (UTC)',
    ),
    (
        {"backup": {"schedule": "@daily"}},
        "backup.repository",
        "is required when backup.schedule is set",
    ),
    ({"node": {"disk_low_percent": "x"}}, "node.disk_low_percent", "must be a number from 0 to 99"),
    ({"node": {"docker_root": ""}}, "node.docker_root", "must be a path"),
    ({"node": {"interval_s": "x"}}, "node.interval_s", "must be a number from 1 to 3600"),
    ({"node": {"watch_paths": "x"}}, "node.watch_paths", "must be a list of paths"),
    ({"notify": 5}, "notify", "must be an array of tables ([[notify]])"),
]


@pytest.mark.parametrize(("raw", "key", "message"), MESSAGES)
def test_error_messages_name_the_key_as_before(raw: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw, base_dir=Path("/nonexistent"))
    assert (err.value.key, err.value.message) == (key, message)


@pytest.mark.parametrize(
    ("flags", "key", "message"),
    [
        (Overrides(log_level="x"), "--log-level", "must be one of debug, info, warning, error"),
        (Overrides(log_format="x"), "--log-format", "must be one of logfmt, json, console"),
        (
            Overrides(base_domain="bad domain"),
            "--base-domain",
            "'bad domain' is not a DNS domain name",
        ),
        (
            Overrides(http_listen=("bad",)),
            "--http-listen",
            "'bad' must be host:port, e.g. 0.0.0.0:80 or [::]:80",
        ),
    ],
)
def test_flags_are_checked_like_the_keys(flags: Overrides, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), flags)
    assert (err.value.key, err.value.message) == (key, message)


def test_flags_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = apply_overrides(
        parse(
            {"daemon": {"log_level": "error"}, "proxy": {"base_domain": "a.example"}}, base_dir=ROOT
        ),
        Overrides(data_dir="state", log_level="debug", base_domain="Ex.COM.", api_socket="s"),
    )
    assert config.daemon.data_dir == tmp_path / "state"
    assert config.daemon.log_level == "debug"
    assert config.proxy.base_domain == "ex.com"
    assert config.api.socket == tmp_path / "s"
