"""Daemon configuration: TOML file + command-line overrides → frozen Config.

One error, naming the key (``proxy.http_listen[0]``), for anything wrong;
unknown keys are refused so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from patrd.engine.cap_policy import SecurityPolicy, parse_policy
from patrd.engine.diskguard import MinFree, parse_min_free
from patrd.engine.hardening import DEFAULT_CAPABILITIES, DEFAULT_PIDS_LIMIT, KNOWN_CAPABILITIES
from patrd.engine.subnets import validate_pool
from patrd.model.errors import ConfigError
from patrd.model.spec import NAME_RE
from patrd.notify.config import NodeConfig, parse_node, parse_notify
from patrd.notify.targets import Target
from patrd.settings.engine import EngineConfig, parse_engine
from patrd.state.backup_config import BackupConfig, parse_backup

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json", "console")
EVENT_LOOPS = ("uvloop", "asyncio")  # proxy.event_loop


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
    secrets_key_file: Path | None = None  # None: <data_dir>/secrets.key

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
    # After the request head, like nginx's (a managed URL may set its own).
    body_timeout_s: float = 60.0
    upstream_header_timeout_s: float = 60.0
    upstream_idle_timeout_s: float = 60.0
    send_timeout_s: float = 60.0
    # Limits (issue 5, "Fences"): 0 turns a limit off.
    rate_limit_rps: float = 100.0  # requests per second per client IP (IPv6: per /64)
    rate_limit_burst: int = 200
    rate_limit_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_connections: int = 10000  # concurrent client connections, all clients
    max_connections_per_ip: int = 256
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For is kept
    # How the proxy runs (issue 10, patrd/proxy/runtime.py): worker processes
    # sharing the ports (None: "auto", one per CPU; 0: inside the daemon).
    workers: int | None = None
    event_loop: str = "uvloop"  # or "asyncio"
    # Stop-first swaps (volumes): new requests wait this long for the new instance.
    pause_timeout_s: float = 30.0


@dataclass(frozen=True)
class DockerConfig:
    socket: str = "unix:///var/run/docker.sock"
    stop_timeout_s: int = 10
    ready_timeout_s: float = 60.0
    resync_interval_s: float = 15.0
    pids_limit: int = DEFAULT_PIDS_LIMIT  # per container; 0: no limit
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES  # all others are dropped
    # Deployment networks get a /network_prefix from this pool ("" : Docker's
    # default pools, which hold only ~30 networks).
    network_pool: str = "10.213.0.0/16"
    network_prefix: int = 24


@dataclass(frozen=True)
class FirewallConfig:
    """``[firewall]``: patrd's nftables table (``patrd/firewall/rules.py``)."""

    enabled: bool = False
    ssh_port: int = 22
    input_policy: str = "drop"
    api_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_tcp: tuple[int, ...] = ()
    allow_udp: tuple[int, ...] = ()
    new_conn_rate: int = 50  # per second per source address (IPv6: per /64)
    new_conn_burst: int = 100
    max_conn_per_source: int = 256
    check_interval_s: float = 10.0


@dataclass(frozen=True)
class TlsConfig:
    """``[tls]``: the HTTPS listeners and certificate renewal (issue 4, patrd/tls/)."""

    https_listen: tuple[Listen, ...] = (Listen("0.0.0.0", 443),)  # () = no HTTPS
    redirect_http: bool = True  # default of a managed URL's http_redirect
    redirect_default_urls: bool = False  # <port>-<name>.<base_domain> over HTTP → 308
    renew_before: float = 1 / 3  # renew when at most this fraction of the lifetime is left
    check_interval_s: float = 3600.0
    # The local CA signs only under proxy.base_domain, localhost and these.
    local_ca_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class AcmeConfig:
    """``[acme]``: certificates from an ACME CA (else: the local CA)."""

    enabled: bool = False
    directory_url: str = "https://acme-v02.api.letsencrypt.org/directory"
    ca_bundle: Path | None = None  # CA certificates to trust for the directory's TLS
    contact_email: str = ""
    resolve_check: bool = True  # order only names that resolve to this host
    resolver: Listen | None = None  # DNS server for that check (default: the system's)
    public_addresses: tuple[str, ...] = ()  # count as this host's (1:1 NAT)
    backoff_initial_s: float = 300.0
    backoff_max_s: float = 6 * 3600.0
    max_orders_per_hour: int = 5  # per name
    timeout_s: float = 90.0  # one order, end to end


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: per-instance sampling from cgroups (issue 7, patrd/observe/metrics.py)."""

    interval_s: float = 5.0
    cgroup_root: Path = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class LogsConfig:
    """``[logs]``: logs of removed instances kept by patrd (patrd/observe/logs.py)."""

    retention_s: float = 7 * 24 * 3600.0
    keep_bytes_per_instance: int = 1024 * 1024  # the newest bytes of each removed instance
    keep_bytes_total: int = 256 * 1024 * 1024  # all deployments; oldest files go first


@dataclass(frozen=True)
class AutoscaleConfig:
    """``[autoscale]``: the CPU autoscaler (patrd/control/autoscale.py)."""

    enabled: bool = True
    interval_s: float = 15.0
    window_s: float = 300.0  # usage above target this long before scaling up
    stabilization_s: float = 300.0  # scale down to the highest recommendation of this window
    tolerance: float = 0.1


@dataclass(frozen=True)
class CostConfig:
    """``[cost]``: the price table behind ``estimated_cost`` (observe/cost.py); zero by default."""

    currency: str = "USD"
    vcpu_month: float = 0.0
    gib_ram_month: float = 0.0
    gib_volume_month: float = 0.0


@dataclass(frozen=True)
class RegistryConfig:
    """``[registry]``: the node registry and deploy on push (issue 8, patrd/registry/node.py)."""

    enabled: bool = False  # run Debian's docker-registry as the node registry
    listen: Listen = field(default_factory=lambda: Listen("127.0.0.1", 5000))
    storage_dir: Path | None = None  # None: <data_dir>/registry
    htpasswd_file: Path | None = None  # basic auth for pushes and pulls (htpasswd -B)
    # No htpasswd_file: patrd generates one credential (patrd/registry/auth.py).
    # false: no auth at all, only with a loopback listen address.
    auth: bool = True
    webhook_listen: Listen = field(default_factory=lambda: Listen("127.0.0.1", 7071))
    poll_interval_s: float = 0.0  # other registries: poll tags for new digests (0: off)
    binary: str = "docker-registry"

    @property
    def host(self) -> str:
        """How deployments with ``registry: "local"`` pull: host:port of the node registry."""
        host = "127.0.0.1" if self.listen.host in ("0.0.0.0", "::", "") else self.listen.host
        return f"{host}:{self.listen.port}"


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    security: SecurityPolicy = field(default_factory=SecurityPolicy)  # patrd/engine/cap_policy.py
    dashboard: DashboardConfig = field(default_factory=lambda: DashboardConfig())
    history: HistoryConfig = field(default_factory=lambda: HistoryConfig())
    images: ImagesConfig = field(default_factory=lambda: ImagesConfig())
    disk: DiskConfig = field(default_factory=lambda: DiskConfig())
    backup: BackupConfig = field(default_factory=BackupConfig)  # off-site (patrd/state/offsite.py)
    # Notifications and the node's health (patrd/notify/config.py).
    notify: tuple[Target, ...] = ()
    node: NodeConfig = field(default_factory=NodeConfig)
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
    _known(
        raw,
        {"daemon", "api", "proxy", "docker", "firewall", "tls", "acme", "registry", "security"}
        | _OBSERVE_SECTIONS
        | {"dashboard", "backup", "notify", "node", "engine"}
        | _IMAGES_SECTIONS,
        "",
    )
    d = _table(raw, "daemon")
    _known(d, {"data_dir", "region", "log_level", "log_format", "secrets_key_file"}, "daemon.")
    daemon = DaemonConfig(
        data_dir=_path(d, "data_dir", "daemon.", base_dir) or DaemonConfig.data_dir,
        region=_region(d.get("region", DaemonConfig.region)),
        log_level=_choice(d, "log_level", "daemon.", LOG_LEVELS, DaemonConfig.log_level),
        log_format=_choice(d, "log_format", "daemon.", LOG_FORMATS, DaemonConfig.log_format),
        secrets_key_file=_path(d, "secrets_key_file", "daemon.", base_dir),
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
            "body_timeout_s",
            "upstream_header_timeout_s",
            "upstream_idle_timeout_s",
            "send_timeout_s",
            "rate_limit_rps",
            "rate_limit_burst",
            "rate_limit_exempt",
            "max_connections",
            "max_connections_per_ip",
            "trusted_proxies",
            "workers",
            "event_loop",
            "pause_timeout_s",
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
        body_timeout_s=_float(p, "body_timeout_s", "proxy.", ProxyConfig.body_timeout_s),
        upstream_header_timeout_s=_float(
            p, "upstream_header_timeout_s", "proxy.", ProxyConfig.upstream_header_timeout_s
        ),
        upstream_idle_timeout_s=_float(
            p, "upstream_idle_timeout_s", "proxy.", ProxyConfig.upstream_idle_timeout_s
        ),
        send_timeout_s=_float(p, "send_timeout_s", "proxy.", ProxyConfig.send_timeout_s),
        rate_limit_rps=_float0(p, "rate_limit_rps", "proxy.", ProxyConfig.rate_limit_rps),
        rate_limit_burst=_int(p, "rate_limit_burst", "proxy.", ProxyConfig.rate_limit_burst, 1),
        rate_limit_exempt=tuple(
            str(n)
            for n in _networks(p, "rate_limit_exempt", "proxy.", ProxyConfig.rate_limit_exempt)
        ),
        max_connections=_int(p, "max_connections", "proxy.", ProxyConfig.max_connections, 0),
        max_connections_per_ip=_int(
            p, "max_connections_per_ip", "proxy.", ProxyConfig.max_connections_per_ip, 0
        ),
        trusted_proxies=tuple(str(n) for n in _networks(p, "trusted_proxies", "proxy.", ())),
        workers=_workers(p.get("workers", "auto")),
        event_loop=_choice(p, "event_loop", "proxy.", EVENT_LOOPS, ProxyConfig.event_loop),
        pause_timeout_s=_float(p, "pause_timeout_s", "proxy.", ProxyConfig.pause_timeout_s),
    )
    k = _table(raw, "docker")
    _known(
        k,
        {
            "socket",
            "stop_timeout_s",
            "ready_timeout_s",
            "resync_interval_s",
            "pids_limit",
            "capabilities",
            "network_pool",
            "network_prefix",
        },
        "docker.",
    )
    pool = _str(k.get("network_pool", DockerConfig.network_pool), "docker.network_pool")
    prefix = _int(k, "network_prefix", "docker.", DockerConfig.network_prefix, 8)
    if pool:
        problem = validate_pool(pool, prefix)
        if problem:
            raise ConfigError("docker.network_pool", problem)
    docker = DockerConfig(
        socket=_str(k.get("socket", DockerConfig.socket), "docker.socket"),
        stop_timeout_s=_int(k, "stop_timeout_s", "docker.", DockerConfig.stop_timeout_s, 0),
        ready_timeout_s=_float(k, "ready_timeout_s", "docker.", DockerConfig.ready_timeout_s),
        resync_interval_s=_float(k, "resync_interval_s", "docker.", DockerConfig.resync_interval_s),
        pids_limit=_int(k, "pids_limit", "docker.", DockerConfig.pids_limit, 0),
        capabilities=_capabilities(k.get("capabilities", list(DockerConfig.capabilities))),
        network_pool=pool,
        network_prefix=prefix,
    )
    return Config(
        daemon=daemon,
        api=api,
        proxy=proxy,
        docker=docker,
        firewall=_firewall(raw),
        tls=_tls(raw),
        acme=_acme(raw, base_dir),
        registry=_registry(raw, base_dir),
        security=parse_policy(_table(raw, "security")),
        dashboard=_dashboard(raw, base_dir, tcp_listen=api.tcp_listen),
        backup=parse_backup(raw, base_dir),
        notify=parse_notify(raw),
        node=parse_node(raw, base_dir),
        engine=parse_engine(raw),
        **_observe(raw, base_dir),
        **_images(raw),
    )


def _registry(raw: Mapping[str, Any], base_dir: Path) -> RegistryConfig:
    r = _table(raw, "registry")
    keys = {
        "enabled",
        "listen",
        "storage_dir",
        "htpasswd_file",
        "webhook_listen",
        "poll_interval_s",
        "binary",
        "auth",
    }
    _known(r, keys, "registry.")
    enabled = r.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("registry.enabled", "must be true or false")
    poll = r.get("poll_interval_s", 0)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll < 0:
        raise ConfigError("registry.poll_interval_s", "must be 0 (off) or a positive number")
    default = RegistryConfig()
    auth = _boolean(r, "auth", "registry.", default.auth)
    listen = parse_listen(
        _str(r.get("listen", str(default.listen)), "registry.listen"), "registry.listen"
    )
    htpasswd = _path(r, "htpasswd_file", "registry.", base_dir)
    if not auth and htpasswd is not None:
        raise ConfigError("registry.auth", "is false but registry.htpasswd_file is set; pick one")
    if enabled and not auth and not _loopback(listen.host):
        raise ConfigError(
            "registry.listen",
            f"{listen} is beyond loopback and registry.auth = false: anyone who reaches it "
            "could push (and deploy); listen on 127.0.0.1 or turn auth on",
        )
    return RegistryConfig(
        enabled=enabled,
        listen=listen,
        auth=auth,
        storage_dir=_path(r, "storage_dir", "registry.", base_dir),
        htpasswd_file=htpasswd,
        webhook_listen=parse_listen(
            _str(r.get("webhook_listen", str(default.webhook_listen)), "registry.webhook_listen"),
            "registry.webhook_listen",
        ),
        poll_interval_s=float(poll),
        binary=_str(r.get("binary", default.binary), "registry.binary"),
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls(raw: Mapping[str, Any]) -> TlsConfig:
    t = _table(raw, "tls")
    keys = {
        "https_listen",
        "redirect_http",
        "redirect_default_urls",
        "renew_before",
        "check_interval_s",
        "local_ca_names",
    }
    _known(t, keys, "tls.")
    listens = _list(t, "https_listen", "tls.", ["0.0.0.0:443"])
    renew_before = t.get("renew_before", TlsConfig.renew_before)
    if (
        isinstance(renew_before, bool)
        or not isinstance(renew_before, int | float)
        or not 0 < renew_before <= 1
    ):
        raise ConfigError("tls.renew_before", "must be a fraction of the lifetime, 0 < x <= 1")
    return TlsConfig(
        https_listen=tuple(
            parse_listen(_str(v, f"tls.https_listen[{i}]"), f"tls.https_listen[{i}]")
            for i, v in enumerate(listens)
        ),
        redirect_http=_boolean(t, "redirect_http", "tls.", TlsConfig.redirect_http),
        redirect_default_urls=_boolean(
            t, "redirect_default_urls", "tls.", TlsConfig.redirect_default_urls
        ),
        renew_before=float(renew_before),
        check_interval_s=_float(t, "check_interval_s", "tls.", TlsConfig.check_interval_s),
        local_ca_names=tuple(
            _domain(v, f"tls.local_ca_names[{i}]")
            for i, v in enumerate(_list(t, "local_ca_names", "tls.", []))
        ),
    )


def _acme(raw: Mapping[str, Any], base_dir: Path) -> AcmeConfig:
    a = _table(raw, "acme")
    keys = {
        "enabled",
        "directory_url",
        "ca_bundle",
        "contact_email",
        "resolve_check",
        "resolver",
        "public_addresses",
        "backoff_initial_s",
        "backoff_max_s",
        "max_orders_per_hour",
        "timeout_s",
    }
    _known(a, keys, "acme.")
    url = _str(a.get("directory_url", AcmeConfig.directory_url), "acme.directory_url")
    if not url.startswith(("https://", "http://")):
        raise ConfigError("acme.directory_url", "must be an https:// URL")
    email = _str(a.get("contact_email", ""), "acme.contact_email")
    if email and ("@" not in email or any(c.isspace() for c in email)):
        raise ConfigError("acme.contact_email", f"{email!r} is not an email address")
    resolver = _str(a.get("resolver", ""), "acme.resolver")
    public = []
    for i, value in enumerate(_list(a, "public_addresses", "acme.", [])):
        try:
            public.append(str(ipaddress.ip_address(_str(value, f"acme.public_addresses[{i}]"))))
        except ValueError:
            raise ConfigError(f"acme.public_addresses[{i}]", "must be an IP address") from None
    ca_bundle = _path(a, "ca_bundle", "acme.", base_dir)
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError("acme.ca_bundle", f"{ca_bundle} is not a file")
    backoff_initial = _float(a, "backoff_initial_s", "acme.", AcmeConfig.backoff_initial_s)
    backoff_max = _float(a, "backoff_max_s", "acme.", AcmeConfig.backoff_max_s)
    if backoff_max < backoff_initial:
        raise ConfigError("acme.backoff_max_s", "must be at least acme.backoff_initial_s")
    return AcmeConfig(
        enabled=_boolean(a, "enabled", "acme.", AcmeConfig.enabled),
        directory_url=url,
        ca_bundle=ca_bundle,
        contact_email=email,
        resolve_check=_boolean(a, "resolve_check", "acme.", AcmeConfig.resolve_check),
        resolver=parse_listen(resolver, "acme.resolver") if resolver else None,
        public_addresses=tuple(public),
        backoff_initial_s=backoff_initial,
        backoff_max_s=backoff_max,
        max_orders_per_hour=_int(
            a, "max_orders_per_hour", "acme.", AcmeConfig.max_orders_per_hour, 1
        ),
        timeout_s=_float(a, "timeout_s", "acme.", AcmeConfig.timeout_s),
    )


def _boolean(table: Mapping[str, Any], name: str, prefix: str, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(prefix + name, "must be true or false")
    return value


def _firewall(raw: Mapping[str, Any]) -> FirewallConfig:
    f = _table(raw, "firewall")
    keys = {
        "enabled",
        "ssh_port",
        "input_policy",
        "api_allow",
        "allow_tcp",
        "allow_udp",
        "new_conn_rate",
        "new_conn_burst",
        "max_conn_per_source",
        "check_interval_s",
    }
    _known(f, keys, "firewall.")
    enabled = f.get("enabled", FirewallConfig.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError("firewall.enabled", "must be true or false")
    ssh_port = _int(f, "ssh_port", "firewall.", FirewallConfig.ssh_port, 1)
    if ssh_port > 65535:
        raise ConfigError("firewall.ssh_port", "must be at most 65535")
    return FirewallConfig(
        enabled=enabled,
        ssh_port=ssh_port,
        input_policy=_choice(
            f, "input_policy", "firewall.", ("drop", "accept"), FirewallConfig.input_policy
        ),
        api_allow=_networks(f, "api_allow", "firewall.", ()),
        allow_tcp=_ports(f, "allow_tcp", "firewall."),
        allow_udp=_ports(f, "allow_udp", "firewall."),
        new_conn_rate=_int(f, "new_conn_rate", "firewall.", FirewallConfig.new_conn_rate, 0),
        new_conn_burst=_int(f, "new_conn_burst", "firewall.", FirewallConfig.new_conn_burst, 1),
        max_conn_per_source=_int(
            f, "max_conn_per_source", "firewall.", FirewallConfig.max_conn_per_source, 0
        ),
        check_interval_s=_float(
            f, "check_interval_s", "firewall.", FirewallConfig.check_interval_s
        ),
    )


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
    tls = config.tls
    if o.https_listen:
        https = () if o.https_listen == ("off",) else o.https_listen
        tls = replace(tls, https_listen=tuple(parse_listen(v, "--https-listen") for v in https))
    return replace(config, daemon=daemon, api=api, proxy=proxy, tls=tls)


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


def _workers(value: Any) -> int | None:
    """``proxy.workers``: "auto" (None) or a count >= 0 (0: inside the daemon)."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise ConfigError("proxy.workers", 'must be "auto" or an integer from 0 to 64')
    return int(value)


def _float0(table: Mapping[str, Any], name: str, prefix: str, default: float) -> float:
    """A number >= 0 (0 turns the limit off)."""
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(prefix + name, "must be a number >= 0 (0: off)")
    return float(value)


def _list(table: Mapping[str, Any], name: str, prefix: str, default: Any) -> list[Any]:
    value = table.get(name, default)
    if not isinstance(value, list | tuple):
        raise ConfigError(prefix + name, "must be a list")
    return list(value)


def _networks(
    table: Mapping[str, Any], name: str, prefix: str, default: tuple[str, ...]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of addresses or CIDR networks ("10.0.0.0/8", "2001:db8::1")."""
    networks = []
    for i, value in enumerate(_list(table, name, prefix, list(default))):
        key = f"{prefix}{name}[{i}]"
        try:
            networks.append(ipaddress.ip_network(_str(value, key), strict=False))
        except ValueError:
            raise ConfigError(key, f"{value!r} is not an IP address or network") from None
    return tuple(networks)


def _ports(table: Mapping[str, Any], name: str, prefix: str) -> tuple[int, ...]:
    ports = []
    for i, value in enumerate(_list(table, name, prefix, [])):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ConfigError(f"{prefix}{name}[{i}]", "must be a port number 1..65535")
        ports.append(value)
    return tuple(ports)


def _capabilities(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError("docker.capabilities", "must be a list of capability names")
    caps = []
    for i, item in enumerate(value):
        cap = _str(item, f"docker.capabilities[{i}]").upper().removeprefix("CAP_")
        if cap not in KNOWN_CAPABILITIES:
            raise ConfigError(f"docker.capabilities[{i}]", f"unknown capability {item!r}")
        caps.append(cap)
    return tuple(caps)


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


# --- issue 7: metrics, kept logs, autoscaler, price table ------------------------

_OBSERVE_SECTIONS = {"metrics", "logs", "autoscale", "cost"}


def _observe(raw: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    m = _table(raw, "metrics")
    _known(m, {"interval_s", "cgroup_root"}, "metrics.")
    metrics = MetricsConfig(
        interval_s=_float(m, "interval_s", "metrics.", MetricsConfig.interval_s),
        cgroup_root=_path(m, "cgroup_root", "metrics.", base_dir) or MetricsConfig.cgroup_root,
    )
    lg = _table(raw, "logs")
    _known(lg, {"retention_s", "keep_bytes_per_instance", "keep_bytes_total"}, "logs.")
    logs = LogsConfig(
        retention_s=_float(lg, "retention_s", "logs.", LogsConfig.retention_s),
        keep_bytes_per_instance=_int(
            lg, "keep_bytes_per_instance", "logs.", LogsConfig.keep_bytes_per_instance, 0
        ),
        keep_bytes_total=_int(lg, "keep_bytes_total", "logs.", LogsConfig.keep_bytes_total, 0),
    )
    a = _table(raw, "autoscale")
    _known(a, {"enabled", "interval_s", "window_s", "stabilization_s", "tolerance"}, "autoscale.")
    tolerance = _float0(a, "tolerance", "autoscale.", AutoscaleConfig.tolerance)
    if tolerance >= 1:
        raise ConfigError("autoscale.tolerance", "must be below 1 (0.1 is 10%)")
    autoscale = AutoscaleConfig(
        enabled=_boolean(a, "enabled", "autoscale.", AutoscaleConfig.enabled),
        interval_s=_float(a, "interval_s", "autoscale.", AutoscaleConfig.interval_s),
        window_s=_float(a, "window_s", "autoscale.", AutoscaleConfig.window_s),
        stabilization_s=_float(a, "stabilization_s", "autoscale.", AutoscaleConfig.stabilization_s),
        tolerance=tolerance,
    )
    c = _table(raw, "cost")
    _known(c, {"currency", "vcpu_month", "gib_ram_month", "gib_volume_month"}, "cost.")
    currency = _str(c.get("currency", CostConfig.currency), "cost.currency").strip()
    if not 1 <= len(currency) <= 8:
        raise ConfigError("cost.currency", "must be a short currency code such as USD")
    cost = CostConfig(
        currency=currency,
        vcpu_month=_float0(c, "vcpu_month", "cost.", 0.0),
        gib_ram_month=_float0(c, "gib_ram_month", "cost.", 0.0),
        gib_volume_month=_float0(c, "gib_volume_month", "cost.", 0.0),
    )
    return {"metrics": metrics, "logs": logs, "autoscale": autoscale, "cost": cost}


# --- issue 11: the dashboard (patrd/dashboard/) ---------------------------------


@dataclass(frozen=True)
class DashboardConfig:
    """``[dashboard]``: the web console at ``/ui/`` on the API's TCP listener."""

    enabled: bool = False
    admin_password_file: Path | None = None  # the admin password (>= 12 chars), re-read at login
    session_ttl_s: float = 12 * 3600.0  # a session ends this long after login ...
    idle_timeout_s: float = 3600.0  # ... or this long after its last request
    login_attempts_per_minute: int = 5  # attempts per client (IPv6: /64) before backoff
    scope: str = "write"  # what a session may do on /v1 (read, deploy, write, admin)


def _dashboard(
    raw: Mapping[str, Any], base_dir: Path, *, tcp_listen: Listen | None
) -> DashboardConfig:
    d = _table(raw, "dashboard")
    keys = {
        "enabled",
        "admin_password_file",
        "session_ttl_s",
        "idle_timeout_s",
        "login_attempts_per_minute",
        "scope",
    }
    _known(d, keys, "dashboard.")
    enabled = _boolean(d, "enabled", "dashboard.", DashboardConfig.enabled)
    password_file = _path(d, "admin_password_file", "dashboard.", base_dir)
    if enabled and password_file is None:
        raise ConfigError("dashboard.admin_password_file", "is required when the dashboard is on")
    if enabled and tcp_listen is None:
        raise ConfigError("dashboard.enabled", "the dashboard is served on api.tcp_listen; set it")
    scope = d.get("scope", DashboardConfig.scope)
    if scope not in ("read", "deploy", "write", "admin"):
        raise ConfigError("dashboard.scope", "must be one of: read, deploy, write, admin")
    return DashboardConfig(
        enabled=enabled,
        admin_password_file=password_file,
        session_ttl_s=_float(d, "session_ttl_s", "dashboard.", DashboardConfig.session_ttl_s),
        idle_timeout_s=_float(d, "idle_timeout_s", "dashboard.", DashboardConfig.idle_timeout_s),
        login_attempts_per_minute=_int(
            d,
            "login_attempts_per_minute",
            "dashboard.",
            DashboardConfig.login_attempts_per_minute,
            1,
        ),
        scope=scope,
    )


# --- pinned releases: revisions kept, image garbage collection, the disk guard ---

_IMAGES_SECTIONS = {"history", "images", "disk"}


@dataclass(frozen=True)
class HistoryConfig:
    """``[history]``: revisions kept per deployment (plus every retained release)."""

    keep_revisions: int = 100


@dataclass(frozen=True)
class ImagesConfig:
    """``[images]``: removal of pulled images no release needs (patrd/engine/imagegc.py)."""

    keep_releases: int = 5  # per deployment, the newest releases whose images stay
    gc_interval_s: float = 3600.0


@dataclass(frozen=True)
class DiskConfig:
    """``[disk]``: pulls are refused below ``min_free`` (patrd/engine/diskguard.py)."""

    min_free: MinFree = field(default_factory=lambda: parse_min_free("2GiB or 5%", "disk.min_free"))
    check_interval_s: float = 30.0


def _images(raw: Mapping[str, Any]) -> dict[str, Any]:
    i = _table(raw, "images")
    _known(i, {"keep_releases", "gc_interval_s"}, "images.")
    images = ImagesConfig(
        keep_releases=_int(i, "keep_releases", "images.", ImagesConfig.keep_releases, 1),
        gc_interval_s=_float(i, "gc_interval_s", "images.", ImagesConfig.gc_interval_s),
    )
    d = _table(raw, "disk")
    _known(d, {"min_free", "check_interval_s"}, "disk.")
    min_free = d.get("min_free", "2GiB or 5%")
    disk = DiskConfig(
        min_free=parse_min_free(
            str(min_free)
            if isinstance(min_free, int) and not isinstance(min_free, bool)
            else _str(min_free, "disk.min_free"),
            "disk.min_free",
        ),
        check_interval_s=_float(d, "check_interval_s", "disk.", DiskConfig.check_interval_s),
    )
    h = _table(raw, "history")
    _known(h, {"keep_revisions"}, "history.")
    history = HistoryConfig(
        keep_revisions=_int(h, "keep_revisions", "history.", HistoryConfig.keep_revisions, 1)
    )
    return {"history": history, "images": images, "disk": disk}
