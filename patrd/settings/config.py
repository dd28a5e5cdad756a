"""Daemon configuration: TOML file + command-line overrides → frozen Config.

One error, naming the key (``proxy.http_listen[0]``), for anything wrong;
unknown keys are refused so a typo never silently falls back to a default.

Every key is declared once, as a field of its section's dataclass (default,
check, one-line doc: patrd/model/sections.py). A section lives beside the
code that consumes it when that code sits below settings (``[proxy]`` in
patrd/proxy/options.py, ``[firewall]`` in patrd/firewall/rules.py,
``[registry]`` in patrd/registry/node.py, ``[logs]`` and ``[cost]`` in
patrd/observe/, ``[autoscale]`` in patrd/control/autoscale.py, ``[backup]``
in patrd/state/backup_config.py, ``[node]`` in patrd/notify/config.py), the
rest in patrd/settings/sections.py. This module composes them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_type_hints

from patrd.control.autoscale import AutoscaleConfig
from patrd.engine.cap_policy import SecurityPolicy, parse_policy
from patrd.firewall.rules import FirewallConfig
from patrd.model.checks import reject_unknown, table_at
from patrd.model.errors import ConfigError
from patrd.model.listen import Listen, parse_listen
from patrd.model.sections import load_section, override
from patrd.notify.config import NodeConfig, parse_notify
from patrd.notify.targets import Target
from patrd.observe.cost import CostConfig
from patrd.observe.logs import LogsConfig
from patrd.proxy.options import EVENT_LOOPS, ProxyOptions
from patrd.registry.node import RegistryConfig
from patrd.settings.engine import EngineConfig
from patrd.settings.sections import (
    LOG_FORMATS,
    LOG_LEVELS,
    AcmeConfig,
    ApiConfig,
    DaemonConfig,
    DashboardConfig,
    DiskConfig,
    DockerConfig,
    HistoryConfig,
    ImagesConfig,
    MetricsConfig,
    TlsConfig,
)
from patrd.state.backup_config import BackupConfig

__all__ = [
    "EVENT_LOOPS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "AcmeConfig",
    "ApiConfig",
    "AutoscaleConfig",
    "BackupConfig",
    "Config",
    "CostConfig",
    "DaemonConfig",
    "DashboardConfig",
    "DiskConfig",
    "DockerConfig",
    "FirewallConfig",
    "HistoryConfig",
    "ImagesConfig",
    "Listen",
    "LogsConfig",
    "MetricsConfig",
    "NodeConfig",
    "Overrides",
    "ProxyConfig",
    "RegistryConfig",
    "TlsConfig",
    "apply_overrides",
    "load",
    "parse",
    "parse_listen",
]

# ``[proxy]`` is the proxy's own options (patrd/proxy/options.py), handed over as they are.
ProxyConfig = ProxyOptions


@dataclass(frozen=True)
class Config:
    """The daemon config; each field of a section type is a ``[section]`` of the file."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    docker: DockerConfig = field(default_factory=DockerConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    security: SecurityPolicy = field(default_factory=SecurityPolicy)  # patrd/engine/cap_policy.py
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)  # off-site (patrd/state/offsite.py)
    # Notifications (``[[notify]]``) and the node's health (patrd/notify/config.py).
    notify: tuple[Target, ...] = ()
    node: NodeConfig = field(default_factory=NodeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)  # patrd/settings/engine.py


@dataclass(frozen=True)
class Overrides:
    """Command-line flags that win over the file."""

    data_dir: str | None = None
    api_socket: str | None = None
    http_listen: tuple[str, ...] = ()
    https_listen: tuple[str, ...] = ()  # "off" alone: no HTTPS listener
    base_domain: str | None = None
    log_level: str | None = None
    log_format: str | None = None


def load(path: Path | None, overrides: Overrides | None = None) -> Config:
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("--config", f"file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
        base_dir = path.resolve().parent
    config = parse(raw, base_dir=base_dir)
    return apply_overrides(config, overrides or Overrides())


def parse(raw: Mapping[str, Any], *, base_dir: Path) -> Config:
    """Relative paths in the file are relative to the file's directory."""
    types = get_type_hints(Config)
    reject_unknown(raw, set(types), "", ConfigError)
    values: dict[str, Any] = {}
    for name, kind in types.items():
        if name == "security":
            values[name] = parse_policy(table_at(raw.get(name, {}), name))
        elif name == "notify":
            values[name] = parse_notify(raw)
        else:
            values[name] = load_section(kind, raw, name, base_dir)
    config = Config(**values)
    if config.dashboard.enabled and config.api.tcp_listen is None:
        raise ConfigError("dashboard.enabled", "the dashboard is served on api.tcp_listen; set it")
    return config


def apply_overrides(config: Config, o: Overrides) -> Config:
    """The flags, checked by the same declarations as the file's keys (errors name the flag)."""
    daemon, api, proxy, tls = config.daemon, config.api, config.proxy, config.tls
    cwd = Path.cwd()
    for name, value, flag in (
        ("data_dir", o.data_dir, "--data-dir"),
        ("log_level", o.log_level, "--log-level"),
        ("log_format", o.log_format, "--log-format"),
    ):
        if value:
            daemon = override(daemon, name, value, flag, cwd)
    if o.api_socket:
        api = override(api, "socket", o.api_socket, "--api-socket", cwd)
    if o.http_listen:
        proxy = replace(
            proxy, http_listen=tuple(parse_listen(v, "--http-listen") for v in o.http_listen)
        )
    if o.base_domain:
        proxy = override(proxy, "base_domain", o.base_domain, "--base-domain", cwd)
    if o.https_listen:
        https = () if o.https_listen == ("off",) else o.https_listen
        tls = replace(tls, https_listen=tuple(parse_listen(v, "--https-listen") for v in https))
    return replace(config, daemon=daemon, api=api, proxy=proxy, tls=tls)
