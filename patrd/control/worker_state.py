"""What the parts of one deployment's worker share: its adapters, options and state.

The worker (worker.py) owns it; the plan steps (steps.py), the image
resolver (images.py) and the probes (probing.py) read and change it. Nothing
here outlives the daemon: a restart forgives past crashes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patrd.control.decisions import next_failure
from patrd.control.options import ControllerOptions, RouteSink
from patrd.control.probes import ProbeStatus
from patrd.control.reconcile import Blocked, SlotHealth
from patrd.engine.protocol import Engine
from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import StoreError
from patrd.model.instances import Instance
from patrd.state.store import Store
from patrd.state.vault import Vault


@dataclass
class ReadyState:
    ip: str
    since: float


@dataclass
class WorkerState:
    ready: dict[str, ReadyState] = field(default_factory=dict)
    probes: dict[str, ProbeStatus] = field(default_factory=dict)
    probing: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # startup failed: id → why
    unhealthy: dict[str, str] = field(default_factory=dict)  # liveness failed: id → why
    health: dict[int, SlotHealth] = field(default_factory=dict)
    blocked: Blocked | None = None
    block_failures: int = 0
    image: tuple[int, str] | None = None  # (revision, image id) already resolved
    config_revision: int | None = None  # config files written for this revision
    network_ok: bool = False
    hold_until: float | None = None  # a stop-first swap: the proxy holds requests until then
    start_error: str = ""  # the last InstanceStartError reported (one event per new message)
    seen: dict[str, int] = field(default_factory=dict)  # container id → slot, last pass
    removed: set[str] = field(default_factory=set)  # container ids patrd itself removed
    stale_starts: dict[str, int] = field(default_factory=dict)  # id → stale-state starts in a row
    engine_errors: dict[int, str] = field(default_factory=dict)  # slot → Instance.error reported
    waiting: dict[int, str] = field(default_factory=dict)  # slot → node, waits told (an event)

    def forget(self, container_id: str) -> None:
        """A container leaves: out of the pool, its checks stopped."""
        self.ready.pop(container_id, None)
        self.probes.pop(container_id, None)
        self.unhealthy.pop(container_id, None)
        task = self.probing.pop(container_id, None)
        if task is not None:
            task.cancel()

    def count_failure(self, slot: int, reason: str, now: float) -> SlotHealth:
        health = next_failure(self.health.get(slot), reason, now)
        self.health[slot] = health
        return health

    def restore_health(self, slot: int, before: SlotHealth | None) -> None:
        if before is None:
            self.health.pop(slot, None)
        else:
            self.health[slot] = before


@dataclass
class WorkerContext:
    """One deployment's worker, as its parts see it."""

    id: str
    store: Store
    engine: Engine
    sink: RouteSink
    options: ControllerOptions
    vault: Vault | None
    log: Any  # structlog's bound logger
    state: WorkerState = field(default_factory=WorkerState)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    record: DeploymentRecord | None = None  # as of the last pass
    instances: list[Instance] = field(default_factory=list)  # this pass's containers
    template: str = ""  # the target template, secret versions included
    # Sends a route table still pending (the controller batches them per loop turn).
    flush_routes: Callable[[], None] | None = None

    def instance(self, container_id: str) -> Instance | None:
        return next((i for i in self.instances if i.container_id == container_id), None)

    async def event(self, kind: str, message: str, revision: int | None) -> None:
        """Best effort: a full disk or a locked database must not keep a crashed
        instance down; the restart matters more than its history line."""
        try:
            await self.store.add_event(self.id, kind, message, revision)
        except StoreError as exc:
            self.log.warning("event_not_recorded", kind=kind, message=message, error=str(exc))
