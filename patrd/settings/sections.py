"""The config sections that no lower layer consumes: declared here, once per key.

Each field is one TOML key of its section (``setting``: default, check, doc);
patrd/model/sections.py walks them. Sections a lower layer consumes are
declared beside their consumer (``[proxy]`` in patrd/proxy/options.py,
``[firewall]`` in patrd/firewall/rules.py, ...); patrd/settings/config.py
composes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.engine.diskguard import MinFree, parse_min_free
from patrd.engine.hardening import DEFAULT_CAPABILITIES, DEFAULT_PIDS_LIMIT
from patrd.engine.subnets import validate_pool
from patrd.model import checks as c
from patrd.model.capabilities import KNOWN_CAPABILITIES
from patrd.model.errors import ConfigError
from patrd.model.listen import Listen
from patrd.model.sections import setting
from patrd.model.spec import NAME_RE

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json", "console")
SCOPES = ("read", "deploy", "write", "admin")  # dashboard.scope


def _region(value: Any, key: str, _: Path) -> str:
    if not NAME_RE.fullmatch(c.str_at(value, key, ConfigError)):
        raise ConfigError(key, "must be lowercase letters, digits and '-'")
    return str(value)


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path = setting(Path("/var/lib/patrd"), c.file_path(), "patrd's state")
    region: str = setting("local", _region, "this node's region (lowercase, digits, '-')")
    log_level: str = setting("info", c.choice(LOG_LEVELS), "debug, info, warning or error")
    log_format: str = setting("logfmt", c.choice(LOG_FORMATS), "logfmt, json or console")
    secrets_key_file: Path | None = setting(
        None, c.file_path(), "the vault's key; unset: <data_dir>/secrets.key"
    )

    @property
    def database(self) -> Path:
        return self.data_dir / "patrd.db"

    @property
    def secrets_key(self) -> Path:
        return self.secrets_key_file or self.data_dir / "secrets.key"

    @property
    def config_root(self) -> Path:
        """Config mount files, one directory per deployment (bind-mounted read-only)."""
        return self.data_dir / "config"


def _socket_mode(value: Any, key: str, _: Path) -> int:
    try:
        return int(c.str_at(value, key, ConfigError), 8)
    except ValueError:
        raise ConfigError(key, 'must be an octal string such as "0660"') from None


def _tcp_listen(value: Any, key: str, base_dir: Path) -> Listen | None:
    """``host:port``; unset, "" (or any false value): no TCP listener."""
    return c.listen()(value, key, base_dir) if value else None


@dataclass(frozen=True)
class ApiConfig:
    socket: Path = setting(Path("/run/patrd/api.sock"), c.file_path(), "the API's Unix socket")
    socket_mode: int = setting(0o660, _socket_mode, 'its mode, an octal string ("0660")')
    tcp_listen: Listen | None = setting(None, _tcp_listen, "the API over TCP (needs token_file)")
    token_file: Path | None = setting(None, c.file_path(), "tokens accepted over TCP")
    max_body_bytes: int = setting(1024 * 1024, c.integer(1024), "largest request body")

    def validate(self) -> None:
        if self.tcp_listen is not None and self.token_file is None:
            raise ConfigError("api.token_file", "is required when api.tcp_listen is set")


def _capabilities(value: Any, key: str, _: Path) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(key, "must be a list of capability names")
    caps = []
    for i, item in enumerate(value):
        cap = c.str_at(item, f"{key}[{i}]", ConfigError).upper().removeprefix("CAP_")
        if cap not in KNOWN_CAPABILITIES:
            raise ConfigError(f"{key}[{i}]", f"unknown capability {item!r}")
        caps.append(cap)
    return tuple(caps)


@dataclass(frozen=True)
class DockerConfig:
    socket: str = setting("unix:///var/run/docker.sock", c.text(), "the Docker engine's API")
    stop_timeout_s: int = setting(10, c.integer(0), "SIGTERM → SIGKILL")
    ready_timeout_s: float = setting(60.0, c.positive(), "a new instance has this long to be ready")
    resync_interval_s: float = setting(15.0, c.positive(), "full reconcile at least this often")
    pids_limit: int = setting(DEFAULT_PIDS_LIMIT, c.integer(0), "per container; 0: no limit")
    capabilities: tuple[str, ...] = setting(
        DEFAULT_CAPABILITIES, _capabilities, "kept by containers; all others are dropped"
    )
    # "": Docker's default pools, which hold only ~30 networks.
    network_pool: str = setting(
        "10.213.0.0/16", c.text(), "deployment networks are cut from this pool"
    )
    network_prefix: int = setting(24, c.integer(8), "the size of each deployment network")

    def validate(self) -> None:
        problem = validate_pool(self.network_pool, self.network_prefix) if self.network_pool else ""
        if problem:
            raise ConfigError("docker.network_pool", problem)


def _renew_before(value: Any, key: str, _: Path) -> float:
    if not c.is_number(value) or not 0 < value <= 1:
        raise ConfigError(key, "must be a fraction of the lifetime, 0 < x <= 1")
    return float(value)


@dataclass(frozen=True)
class TlsConfig:
    """``[tls]``: the HTTPS listeners and certificate renewal (patrd/tls/)."""

    https_listen: tuple[Listen, ...] = setting(
        (Listen("0.0.0.0", 443),), c.listens(), "HTTPS listeners; [] = no HTTPS"
    )
    redirect_http: bool = setting(True, c.boolean(), "default of a managed URL's http_redirect")
    redirect_default_urls: bool = setting(
        False, c.boolean(), "<port>-<name>.<base_domain> over HTTP → 308"
    )
    renew_before: float = setting(
        1 / 3, _renew_before, "renew when at most this fraction of the lifetime is left"
    )
    check_interval_s: float = setting(3600.0, c.positive(), "how often certificates are checked")
    local_ca_names: tuple[str, ...] = setting(
        (), c.domains(), "the local CA signs under proxy.base_domain, localhost and these"
    )


def _directory_url(value: Any, key: str, _: Path) -> str:
    if not c.str_at(value, key, ConfigError).startswith(("https://", "http://")):
        raise ConfigError(key, "must be an https:// URL")
    return str(value)


def _email(value: Any, key: str, _: Path) -> str:
    email = c.str_at(value, key, ConfigError)
    if email and ("@" not in email or any(ch.isspace() for ch in email)):
        raise ConfigError(key, f"{email!r} is not an email address")
    return email


def _bundle(value: Any, key: str, base_dir: Path) -> Path | None:
    bundle = c.path_at(value, key, base_dir)
    if bundle is not None and not bundle.is_file():
        raise ConfigError(key, f"{bundle} is not a file")
    return bundle


@dataclass(frozen=True)
class AcmeConfig:
    """``[acme]``: certificates from an ACME CA (else: the local CA)."""

    enabled: bool = setting(False, c.boolean(), "certificates from an ACME CA")
    directory_url: str = setting(
        "https://acme-v02.api.letsencrypt.org/directory", _directory_url, "the CA's directory"
    )
    ca_bundle: Path | None = setting(
        None, _bundle, "CA certificates to trust for the directory's TLS"
    )
    contact_email: str = setting("", _email, "the account's contact")
    resolve_check: bool = setting(True, c.boolean(), "order only names that resolve to this host")
    resolver: Listen | None = setting(
        None, c.listen(optional=True), "DNS server for that check; unset: the system's"
    )
    public_addresses: tuple[str, ...] = setting((), c.addresses(), "count as this host's (1:1 NAT)")
    backoff_initial_s: float = setting(300.0, c.positive(), "first wait after a failed order")
    backoff_max_s: float = setting(6 * 3600.0, c.positive(), "longest wait between orders")
    max_orders_per_hour: int = setting(5, c.integer(1), "per name")
    timeout_s: float = setting(90.0, c.positive(), "one order, end to end")

    def validate(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("acme.backoff_max_s", "must be at least acme.backoff_initial_s")


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: per-instance sampling from cgroups (patrd/observe/metrics.py)."""

    interval_s: float = setting(5.0, c.positive(), "how often instances are sampled")
    cgroup_root: Path = setting(Path("/sys/fs/cgroup"), c.file_path(), "the cgroup v2 mount")


def _scope(value: Any, key: str, _: Path) -> str:
    if value not in SCOPES:
        raise ConfigError(key, f"must be one of: {', '.join(SCOPES)}")
    return str(value)


@dataclass(frozen=True)
class DashboardConfig:
    """``[dashboard]``: the web console at ``/ui/`` on the API's TCP listener."""

    enabled: bool = setting(False, c.boolean(), "serve the dashboard on api.tcp_listen")
    admin_password_file: Path | None = setting(
        None, c.file_path(), "the admin password (>= 12 chars), re-read at login"
    )
    session_ttl_s: float = setting(
        12 * 3600.0, c.positive(), "a session ends this long after login"
    )
    idle_timeout_s: float = setting(3600.0, c.positive(), "... or after its last request")
    login_attempts_per_minute: int = setting(
        5, c.integer(1), "attempts per client (IPv6: /64) before backoff"
    )
    scope: str = setting("write", _scope, "what a session may do on /v1")

    def validate(self) -> None:
        if self.enabled and self.admin_password_file is None:
            raise ConfigError(
                "dashboard.admin_password_file", "is required when the dashboard is on"
            )


@dataclass(frozen=True)
class HistoryConfig:
    """``[history]``: revisions kept per deployment (plus every retained release)."""

    keep_revisions: int = setting(100, c.integer(1), "revisions kept per deployment")


@dataclass(frozen=True)
class ImagesConfig:
    """``[images]``: removal of pulled images no release needs (patrd/engine/imagegc.py)."""

    keep_releases: int = setting(5, c.integer(1), "per deployment, releases whose images stay")
    gc_interval_s: float = setting(3600.0, c.positive(), "how often unneeded images go")


def _min_free(value: Any, key: str, _: Path) -> MinFree:
    if not c.is_number(value) or not isinstance(value, int):
        value = c.str_at(value, key, ConfigError)
    return parse_min_free(str(value), key)


@dataclass(frozen=True)
class DiskConfig:
    """``[disk]``: pulls are refused below ``min_free`` (patrd/engine/diskguard.py)."""

    min_free: MinFree = setting(
        check=_min_free,
        doc='free space below which pulls are refused ("2GiB or 5%")',
        factory=lambda: parse_min_free("2GiB or 5%", "disk.min_free"),
    )
    check_interval_s: float = setting(30.0, c.positive(), "how often the disk is checked")
