"""The aiohttp application and the sites it is served on.

One application, one runner, up to two sites:

* a ``UnixSite`` on ``api.socket``: its file mode is the authentication, so
  peers on the unix socket are trusted;
* an optional ``TCPSite`` on ``api.tcp_listen``: every request except
  ``GET /v1/health`` must carry ``Authorization: Bearer <token>`` (the
  ``api.token_file`` token, admin, or a scoped token).

Authentication, the scope check and the audit log are one middleware
(``patrd/api/access.py``; the route → scope table is ``patrd/model/scopes.py``).

``build_app(..., token=None)`` disables bearer auth everywhere (unix-only
daemons and tests); with a token, auth applies to every non-unix transport.
With ``dashboard=`` (the TCP app, ``[dashboard] enabled``) the app also serves
``/ui/`` and accepts a dashboard session cookie instead of the bearer token
(``patrd/dashboard/web.py``, seen here as ``access.SessionGate``: CSRF token
required for writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from patrd.api import (
    access,
    backups,
    deployments,
    firewall,
    meta,
    notify,
    observe,
    registry_hook,
    releases,
    run_routes,
    secrets,
    urls,
    volumes,
)
from patrd.api.access import ACCESS, SessionGate, access_middleware
from patrd.api.backups import BACKUPS
from patrd.api.context import CONFIG, CONTROLLER, PROXY_CLOSED, STORE
from patrd.api.errors import error_middleware
from patrd.api.firewall import FIREWALL, FirewallView
from patrd.api.image_ports import IMAGE_PORTS, ImagePorts
from patrd.api.nodes import NodesView, add_node_routes
from patrd.api.notify import NODE, NOTIFY
from patrd.api.observe import OBSERVE, Observability
from patrd.api.registry_hook import REGISTRY_HOOK, RegistryHook
from patrd.api.releases import RESOLVER, TagResolver
from patrd.api.runs import RUNS, Runs
from patrd.api.secrets import VAULT
from patrd.api.urls import TLS, TlsView
from patrd.model.errors import ConfigError
from patrd.model.views import ControllerView
from patrd.notify.dispatcher import Dispatcher
from patrd.observe.nodehealth import NodeWatcher
from patrd.settings.config import Config
from patrd.state.offsite import OffsiteBackups
from patrd.state.store import Store
from patrd.state.tokens import AccessStore
from patrd.state.vault import Vault

log = structlog.get_logger("patrd.api")

# The registry webhook carries its own shared secret (patrd/api/registry_hook.py).
PUBLIC_ROUTES = frozenset({("GET", "/v1/health"), ("POST", "/v1/registry/events")})
SHUTDOWN_TIMEOUT_S = 5.0

# Each resource module adds its own routes; the order is the router's match order.
# The OpenAPI document (openapi.py) lists exactly these routes (a unit test checks).
ROUTE_SETS: tuple[Callable[[web.Application], None], ...] = (
    meta.add_routes,  # /v1/health, /v1/openapi.json
    firewall.add_routes,  # /v1/firewall
    volumes.add_routes,  # volumes and config files of a deployment
    registry_hook.add_routes,  # /v1/registry/events, /v1/registry/login
    secrets.add_routes,  # /v1/secrets
    backups.add_routes,  # /v1/backup, /v1/backups
    urls.add_routes,  # /v1/urls, /v1/certificates
    deployments.add_routes,  # /v1/deployments
    observe.add_routes,  # logs, metrics, /metrics
    run_routes.add_routes,  # exec, one-off run, scheduled jobs
    access.add_routes,  # /v1/tokens, /v1/audit (and the audit log's refusal buffer)
    notify.add_routes,  # /v1/notifications, /v1/node
    releases.add_routes,  # redeploy, revert by REF
)


def build_app(
    store: Store,
    controller: ControllerView,
    config: Config,
    *,
    token: str | None,
    trust_unix_peers: bool = True,
    tls: TlsView | None = None,
    firewall: FirewallView | None = None,
    vault: Vault | None = None,
    observe: Observability | None = None,
    registry_hook: RegistryHook | None = None,
    dashboard: SessionGate | None = None,
    backups: OffsiteBackups | None = None,
    proxy_closed: Callable[[], str | None] | None = None,
    notify: Dispatcher | None = None,
    node: NodeWatcher | None = None,
    resolver: TagResolver | None = None,
    runs: Runs | None = None,
    image_ports: ImagePorts | None = None,
    nodes: NodesView | None = None,
) -> web.Application:
    if token is not None and not token:
        raise ValueError("an empty API token would accept anyone")
    # Outermost: it sees the final status of every call, for the audit log.
    middlewares: list[Middleware] = [
        access_middleware(
            token=token,
            trust_unix_peers=trust_unix_peers,
            public_routes=PUBLIC_ROUTES,
            dashboard=dashboard,
        ),
        error_middleware,
    ]
    app = web.Application(middlewares=middlewares, client_max_size=config.api.max_body_bytes)
    app[STORE] = store
    app[ACCESS] = AccessStore(store)
    app[CONTROLLER] = controller
    app[CONFIG] = config
    if tls is not None:
        app[TLS] = tls
    if firewall is not None:
        app[FIREWALL] = firewall
    if vault is not None:
        app[VAULT] = vault
    if registry_hook is not None:
        app[REGISTRY_HOOK] = registry_hook
    if observe is not None:
        app[OBSERVE] = observe
    if backups is not None:
        app[BACKUPS] = backups
    if proxy_closed is not None:
        app[PROXY_CLOSED] = proxy_closed
    if notify is not None:
        app[NOTIFY] = notify
    if node is not None:
        app[NODE] = node
    if resolver is not None:
        app[RESOLVER] = resolver
    if runs is not None:
        app[RUNS] = runs
    if image_ports is not None:
        app[IMAGE_PORTS] = image_ports  # create without ports: the image's one EXPOSE
    for add_routes in ROUTE_SETS:
        add_routes(app)
    add_node_routes(app, nodes)  # /v1/nodes (patrd/api/nodes.py)
    if dashboard is not None:
        dashboard.install(app)
    return app


async def serve_api(
    app: web.Application,
    *,
    socket_path: Path | None,
    socket_mode: int,
    tcp: tuple[str, int] | None,
) -> web.AppRunner:
    """Start ``app`` on the unix socket and/or TCP; the caller owns ``runner.cleanup()``.

    ``socket_path=None`` serves TCP only (for a second, token-guarded app).
    """
    if socket_path is None and tcp is None:
        raise ValueError("serve_api needs a socket path, a TCP address or both")
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        await _remove_stale_socket(socket_path)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        if socket_path is not None:
            await web.UnixSite(runner, str(socket_path)).start()
            os.chmod(socket_path, socket_mode)
        if tcp is not None:
            host, port = tcp
            await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    tcp_bound = [a for a in runner.addresses if isinstance(a, tuple)]
    log.info(
        "api.listening",
        socket=str(socket_path) if socket_path else None,
        mode=oct(socket_mode) if socket_path else None,
        tcp=f"{tcp_bound[0][0]}:{tcp_bound[0][1]}" if tcp_bound else None,
    )
    return runner


async def _remove_stale_socket(path: Path) -> None:
    """Unlink a socket left by a dead daemon; refuse to touch anything else."""
    if not _socket_exists(path):
        return
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout=1.0)
    except FileNotFoundError:
        return
    except ConnectionRefusedError:
        _unlink(path)
        log.info("api.stale_socket_removed", socket=str(path))
        return
    except TimeoutError:
        raise ConfigError(
            "api.socket", f"{path} is in use: a process accepts on it but does not answer"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise ConfigError("api.socket", f"{path} is in use: another patrd is already serving on it")


def _socket_exists(path: Path) -> bool:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise ConfigError("api.socket", f"{path} exists and is not a socket; refusing to remove it")
    return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
