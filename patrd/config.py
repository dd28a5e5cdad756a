"""Daemon configuration: TOML file + command-line overrides → frozen Config.

One error, naming the key (``proxy.http_listen[0]``), for anything wrong;
unknown keys are refused so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from patrd.errors import ConfigError
from patrd.spec import NAME_RE

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json", "console")


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path = Path("/var/lib/patrd")
    region: str = "local"
    log_level: str = "info"
    log_format: str = "logfmt"

    @property
    def database(self) -> Path:
        return self.data_dir / "patrd.db"


@dataclass(frozen=True)
class ApiConfig:
    socket: Path = Path("/run/patrd/api.sock")
    socket_mode: int = 0o660
    tcp_listen: Listen | None = None
    token_file: Path | None = None
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class ProxyConfig:
    http_listen: tuple[Listen, ...] = (Listen("0.0.0.0", 80),)
    base_domain: str = "localhost"
    drain_timeout_s: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0


@dataclass(frozen=True)
class DockerConfig:
    socket: str = "unix:///var/run/docker.sock"
    stop_timeout_s: int = 10
    ready_timeout_s: float = 60.0
    resync_interval_s: float = 15.0


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)


@dataclass(frozen=True)
class Overrides:
    """Command-line flags that win over the file."""

    data_dir: str | None = None
    api_socket: str | None = None
    http_listen: tuple[str, ...] = ()
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
    _known(raw, {"daemon", "api", "proxy", "docker"}, "")
    d = _table(raw, "daemon")
    _known(d, {"data_dir", "region", "log_level", "log_format"}, "daemon.")
    daemon = DaemonConfig(
        data_dir=_path(d, "data_dir", "daemon.", base_dir) or DaemonConfig.data_dir,
        region=_region(d.get("region", DaemonConfig.region)),
        log_level=_choice(d, "log_level", "daemon.", LOG_LEVELS, DaemonConfig.log_level),
        log_format=_choice(d, "log_format", "daemon.", LOG_FORMATS, DaemonConfig.log_format),
    )
    a = _table(raw, "api")
    _known(a, {"socket", "socket_mode", "tcp_listen", "token_file", "max_body_bytes"}, "api.")
    tcp = a.get("tcp_listen", "")
    token_file = _path(a, "token_file", "api.", base_dir)
    if tcp and token_file is None:
        raise ConfigError("api.token_file", "is required when api.tcp_listen is set")
    mode_text = a.get("socket_mode", "0660")
    try:
        mode = int(_str(mode_text, "api.socket_mode"), 8)
    except ValueError:
        raise ConfigError("api.socket_mode", 'must be an octal string such as "0660"') from None
    api = ApiConfig(
        socket=_path(a, "socket", "api.", base_dir) or ApiConfig.socket,
        socket_mode=mode,
        tcp_listen=parse_listen(_str(tcp, "api.tcp_listen"), "api.tcp_listen") if tcp else None,
        token_file=token_file,
        max_body_bytes=_int(a, "max_body_bytes", "api.", ApiConfig.max_body_bytes, 1024),
    )
    p = _table(raw, "proxy")
    _known(
        p,
        {
            "http_listen",
            "base_domain",
            "drain_timeout_s",
            "max_header_bytes",
            "max_body_bytes",
            "header_timeout_s",
            "idle_timeout_s",
        },
        "proxy.",
    )
    listens = p.get("http_listen", ["0.0.0.0:80"])
    if not isinstance(listens, list) or not listens:
        raise ConfigError("proxy.http_listen", 'must be a non-empty list of "host:port"')
    proxy = ProxyConfig(
        http_listen=tuple(
            parse_listen(_str(v, f"proxy.http_listen[{i}]"), f"proxy.http_listen[{i}]")
            for i, v in enumerate(listens)
        ),
        base_domain=_domain(p.get("base_domain", ProxyConfig.base_domain), "proxy.base_domain"),
        drain_timeout_s=_float(p, "drain_timeout_s", "proxy.", ProxyConfig.drain_timeout_s),
        max_header_bytes=_int(p, "max_header_bytes", "proxy.", ProxyConfig.max_header_bytes, 1024),
        max_body_bytes=_int(p, "max_body_bytes", "proxy.", ProxyConfig.max_body_bytes, 0),
        header_timeout_s=_float(p, "header_timeout_s", "proxy.", ProxyConfig.header_timeout_s),
        idle_timeout_s=_float(p, "idle_timeout_s", "proxy.", ProxyConfig.idle_timeout_s),
    )
    k = _table(raw, "docker")
    _known(k, {"socket", "stop_timeout_s", "ready_timeout_s", "resync_interval_s"}, "docker.")
    docker = DockerConfig(
        socket=_str(k.get("socket", DockerConfig.socket), "docker.socket"),
        stop_timeout_s=_int(k, "stop_timeout_s", "docker.", DockerConfig.stop_timeout_s, 0),
        ready_timeout_s=_float(k, "ready_timeout_s", "docker.", DockerConfig.ready_timeout_s),
        resync_interval_s=_float(k, "resync_interval_s", "docker.", DockerConfig.resync_interval_s),
    )
    return Config(daemon=daemon, api=api, proxy=proxy, docker=docker)


def apply_overrides(config: Config, o: Overrides) -> Config:
    daemon, api, proxy = config.daemon, config.api, config.proxy
    if o.data_dir:
        daemon = replace(daemon, data_dir=Path(o.data_dir).resolve())
    if o.log_level:
        if o.log_level not in LOG_LEVELS:
            raise ConfigError("--log-level", f"must be one of {', '.join(LOG_LEVELS)}")
        daemon = replace(daemon, log_level=o.log_level)
    if o.log_format:
        if o.log_format not in LOG_FORMATS:
            raise ConfigError("--log-format", f"must be one of {', '.join(LOG_FORMATS)}")
        daemon = replace(daemon, log_format=o.log_format)
    if o.api_socket:
        api = replace(api, socket=Path(o.api_socket).resolve())
    if o.http_listen:
        proxy = replace(
            proxy, http_listen=tuple(parse_listen(v, "--http-listen") for v in o.http_listen)
        )
    if o.base_domain:
        proxy = replace(proxy, base_domain=_domain(o.base_domain, "--base-domain"))
    return replace(config, daemon=daemon, api=api, proxy=proxy)


def parse_listen(text: str, key: str) -> Listen:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(key, f"{text!r} must be host:port, e.g. 0.0.0.0:80 or [::]:80")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} out of range 0..65535")
    host = host.strip("[]") or "0.0.0.0"
    return Listen(host, port)


# --- value readers -------------------------------------------------------


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table")
    return value


def _known(table: Mapping[str, Any], keys: set[str], prefix: str) -> None:
    for key in table:
        if key not in keys:
            raise ConfigError(f"{prefix}{key}", f"unknown key; known: {', '.join(sorted(keys))}")


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, "must be a string")
    return value


def _path(table: Mapping[str, Any], name: str, prefix: str, base_dir: Path) -> Path | None:
    if name not in table or table[name] == "":
        return None
    path = Path(_str(table[name], prefix + name))
    return path if path.is_absolute() else (base_dir / path).resolve()


def _int(table: Mapping[str, Any], name: str, prefix: str, default: int, minimum: int) -> int:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(prefix + name, "must be an integer")
    if value < minimum:
        raise ConfigError(prefix + name, f"must be at least {minimum}")
    return int(value)


def _float(table: Mapping[str, Any], name: str, prefix: str, default: float) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(prefix + name, "must be a positive number")
    return float(value)


def _choice(
    table: Mapping[str, Any], name: str, prefix: str, choices: tuple[str, ...], default: str
) -> str:
    value = _str(table.get(name, default), prefix + name)
    if value not in choices:
        raise ConfigError(prefix + name, f"must be one of {', '.join(choices)}")
    return value


def _region(value: Any) -> str:
    region = _str(value, "daemon.region")
    if not NAME_RE.fullmatch(region):
        raise ConfigError("daemon.region", "must be lowercase letters, digits and '-'")
    return region


def _domain(value: Any, key: str) -> str:
    domain = _str(value, key).strip().rstrip(".").lower()
    labels = domain.split(".")
    if not domain or len(domain) > 200 or not all(NAME_RE.fullmatch(label) for label in labels):
        raise ConfigError(key, f"{value!r} is not a DNS domain name")
    return domain
