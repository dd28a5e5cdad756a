"""How the executor is configured and what it publishes routes to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from patrd.engine.cap_policy import SecurityPolicy
from patrd.model.instances import Instance, RegistryAuth
from patrd.proxy.router import RoutingTable


class RouteSink(Protocol):
    """The proxy, as the controller sees it."""

    def set_table(self, table: RoutingTable) -> None: ...

    def outstanding(self, host: str, port: int) -> int: ...


@dataclass(frozen=True, slots=True)
class ControllerOptions:
    base_domain: str
    stop_timeout_s: int = 10
    ready_timeout_s: float = 60.0
    resync_interval_s: float = 15.0
    drain_timeout_s: float = 30.0
    redirect_default_urls: bool = False  # tls.redirect_default_urls
    config_root: Path | None = None  # <data_dir>/config: one directory per deployment
    # Config files cannot change under a running instance (the swarm backend's
    # Swarm configs): an edit is a template change, rolled out.
    config_rollout: bool = False
    local_registry: str = "127.0.0.1:5000"  # registry "local" pulls from here
    # Called before an instance is removed (not on delete): patrd/observe/logs.py
    # keeps its logs. It may stop the container first; errors are its own.
    on_remove: Callable[[Instance], Awaitable[None]] | None = None
    # A stop-first swap: the proxy holds new requests this long (proxy.pause_timeout_s).
    pause_timeout_s: float = 30.0
    # The disk guard (patrd/engine/diskguard.py): None lets a pull go on, else why not.
    pull_guard: Callable[[], Awaitable[str | None]] | None = None
    # [security]: a stored spec the policy would refuse now gets one warning event.
    security_policy: SecurityPolicy | None = None
    # The node registry's generated credential: pulls of registry "local".
    local_registry_auth: RegistryAuth | None = None
