"""The executor: runs the planner per deployment and applies its plans.

Level-triggered: API calls, Docker events and a periodic resync only *wake*
workers; every pass re-reads desired state (store) and actual state (engine)
and converges. One worker task per deployment, so a slow image pull never
holds up another deployment. Killing the daemon at any instant is safe: the
next start adopts the labelled containers it finds and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from patrd.engine import ContainerState, Engine, Instance, InstanceSpec, is_pinned_tag
from patrd.errors import EngineError, ImageNotFound, StoreError
from patrd.proxy.router import RoutingTable
from patrd.reconcile import (
    Action,
    ActionKind,
    Blocked,
    PlanInput,
    SlotHealth,
    backoff_delay,
    plan,
)
from patrd.routing import DeploymentSnapshot, ReadyInstance, build_routes
from patrd.spec import DeploymentSpec
from patrd.store import DeploymentRecord, Intent, Status, Store
from patrd.views import InstanceView

_SETTLING_ACTIONS = frozenset({"die", "kill", "oom", "stop"})
_SETTLE_DELAYS_S = (0.1, 0.5, 2.0)
STABLE_AFTER_S = 10.0  # a slot ready this long has its crash count reset
READY_POLL_S = 0.05


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


def network_name(deployment: str) -> str:
    return f"patrd-{deployment}"


def instance_name(deployment: str, slot: int) -> str:
    return f"{deployment}-{slot}"


def container_name(deployment: str, revision: int, slot: int) -> str:
    return f"patrd-{deployment}-r{revision}-{slot}"


def instance_env(record: DeploymentRecord, slot: int) -> tuple[tuple[str, str], ...]:
    """The user's env plus the variables patrd always sets (docs/env.md)."""
    special = {
        "PATR": "true",
        "DEPLOYMENT_ID": record.id,
        "DEPLOYMENT_NAME": record.name,
        "PATRD_INSTANCE": str(slot),
        "PATRD_REVISION": str(record.revision),
    }
    return tuple(sorted({**dict(record.spec.env), **special}.items()))


class Controller:
    """Owns the deployment workers, the Docker event watch and orphan cleanup."""

    def __init__(
        self, store: Store, engine: Engine, sink: RouteSink, options: ControllerOptions
    ) -> None:
        self._store = store
        self._engine = engine
        self._sink = sink
        self._options = options
        self._workers: dict[str, DeploymentWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake_all = asyncio.Event()
        self._synced = asyncio.Event()
        self._log = structlog.get_logger("patrd.controller")

    # --- ControllerView ----------------------------------------------------

    def wake(self, deployment_id: str | None = None) -> None:
        worker = self._workers.get(deployment_id) if deployment_id else None
        if worker is not None:
            worker.wake()
        else:
            self._wake_all.set()

    def instances(self, deployment_id: str) -> list[InstanceView]:
        worker = self._workers.get(deployment_id)
        return worker.views() if worker else []

    # --- running -------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_events(), name="docker-events")
                tg.create_task(self._sync_loop(), name="sync")
        finally:
            await self._stop_workers()

    async def wait_synced(self, within_s: float) -> bool:
        """True once every deployment known at start has settled (bounded)."""
        try:
            async with asyncio.timeout(within_s):
                await self._synced.wait()
                await asyncio.gather(*(w.settled.wait() for w in list(self._workers.values())))
        except TimeoutError:
            return False
        return True

    def publish(self) -> None:
        snapshots = [w.snapshot for w in self._workers.values() if w.snapshot is not None]
        self._sink.set_table(build_routes(snapshots, self._options.base_domain))

    async def _sync_loop(self) -> None:
        while True:
            self._wake_all.clear()
            try:
                await self._sync()
            except (EngineError, StoreError) as exc:
                self._log.warning("sync_failed", error=str(exc))
            self._synced.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.resync_interval_s):
                    await self._wake_all.wait()

    async def _sync(self) -> None:
        records = await self._store.list_deployments()
        known = {r.id for r in records}
        for record in records:
            if record.id not in self._workers:
                self._spawn(record.id)
            else:
                self._workers[record.id].wake()
        for dep_id in [d for d in self._workers if d not in known and self._tasks[d].done()]:
            del self._workers[dep_id]
            del self._tasks[dep_id]
        await self._collect_orphans(known)
        self.publish()

    def _spawn(self, deployment_id: str) -> None:
        worker = DeploymentWorker(
            deployment_id, self._store, self._engine, self._sink, self._options, self.publish
        )
        self._workers[deployment_id] = worker
        self._tasks[deployment_id] = asyncio.create_task(
            worker.run(), name=f"deployment-{deployment_id[:8]}"
        )

    async def _collect_orphans(self, known: set[str]) -> None:
        """Containers and networks labelled by patrd whose deployment is gone."""
        for inst in await self._engine.list_instances():
            if inst.deployment_id not in known and inst.deployment_id not in self._workers:
                self._log.info(
                    "orphan_removed", container=inst.container_name, deployment=inst.deployment
                )
                await self._engine.remove(inst.container_id, self._options.stop_timeout_s)
        for net in await self._engine.list_networks():
            if net.deployment_id not in known and net.deployment_id not in self._workers:
                self._log.info("orphan_network_removed", network=net.name)
                await self._engine.remove_network(net.name)

    async def _watch_events(self) -> None:
        delay = 1.0
        while True:
            try:
                async for event in self._engine.events():
                    delay = 1.0
                    self._log.debug(
                        "docker_event",
                        action=event.action,
                        container=event.container_id[:12],
                        deployment_id=event.deployment_id,
                    )
                    self.wake(event.deployment_id)
                    if event.action in _SETTLING_ACTIONS:
                        self._wake_later(event.deployment_id)
            except EngineError as exc:
                self._log.warning("docker_events_lost", error=str(exc), retry_in=delay)
            self._wake_all.set()  # events may have been missed: resync everything
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _wake_later(self, deployment_id: str) -> None:
        """Docker emits ``die`` a moment before its container list says ``exited``."""
        loop = asyncio.get_running_loop()
        for delay in _SETTLE_DELAYS_S:
            loop.call_later(delay, self.wake, deployment_id)

    async def _stop_workers(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _ReadyState:
    ip: str
    since: float


@dataclass
class _WorkerState:
    ready: dict[str, _ReadyState] = field(default_factory=dict)
    health: dict[int, SlotHealth] = field(default_factory=dict)
    blocked: Blocked | None = None
    block_failures: int = 0
    image: tuple[int, str] | None = None  # (revision, image id) already resolved
    network_ok: bool = False
    checking: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    reported_unready: set[str] = field(default_factory=set)


class DeploymentWorker:
    """Converges one deployment; the only writer of its containers."""

    def __init__(
        self,
        deployment_id: str,
        store: Store,
        engine: Engine,
        sink: RouteSink,
        options: ControllerOptions,
        publish: Callable[[], None],
    ) -> None:
        self.id = deployment_id
        self._store = store
        self._engine = engine
        self._sink = sink
        self._options = options
        self._publish = publish
        self._wake = asyncio.Event()
        self._state = _WorkerState()
        self._instances: list[Instance] = []
        self._record: DeploymentRecord | None = None
        self.snapshot: DeploymentSnapshot | None = None
        self.settled = asyncio.Event()
        self._log = structlog.get_logger("patrd.controller").bind(deployment_id=deployment_id)

    def wake(self) -> None:
        self._wake.set()

    def views(self) -> list[InstanceView]:
        if self._record is None:
            return []
        return [
            InstanceView(
                name=instance_name(i.deployment, i.slot),
                container_id=i.container_id,
                revision=i.revision,
                slot=i.slot,
                state=i.state.value,
                ready=i.container_id in self._state.ready,
                address=i.ip,
                restarts=self._state.health.get(i.slot, SlotHealth()).failures,
            )
            for i in sorted(self._instances, key=lambda i: (i.slot, i.revision))
        ]

    async def run(self) -> None:
        delay = 1.0
        wake_at: float | None = None
        try:
            while True:
                self._wake.clear()
                try:
                    finished, wake_at = await self._pass()
                    delay = 1.0
                except (EngineError, StoreError) as exc:
                    self._log.warning("reconcile_failed", error=str(exc), retry_in=delay)
                    self._state.network_ok = False
                    wake_at = time.monotonic() + delay
                    delay = min(delay * 2, 30.0)
                    finished = False
                if finished:
                    return
                timeout = self._options.resync_interval_s
                if wake_at is not None:
                    timeout = max(0.0, min(timeout, wake_at - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            for task in self._state.checking.values():
                task.cancel()
            await asyncio.gather(*self._state.checking.values(), return_exceptions=True)
            self.settled.set()

    async def _pass(self) -> tuple[bool, float | None]:
        record = await self._store.get_by_id(self.id)
        if record is None:
            self.snapshot = None
            self._publish()
            return True, None
        self._record = record
        instances = await self._engine.list_instances(self.id)
        self._instances = instances
        now = time.monotonic()
        self._log.debug(
            "pass",
            deployment=record.name,
            instances=",".join(f"{i.container_id[:8]}:{i.state.value}" for i in instances),
        )
        self._track_readiness(record, instances, now)
        result = plan(
            PlanInput(
                intent=record.intent,
                revision=record.revision,
                replicas=record.spec.scale.min,
                instances=instances,
                ready=frozenset(self._state.ready),
                health=dict(self._state.health),
                blocked=self._state.blocked,
                previous_status=record.status,
                now=now,
            )
        )
        self._update_snapshot(record, result.status)
        if result.actions:
            self._log.info(
                "plan",
                deployment=record.name,
                revision=record.revision,
                status=result.status.value,
                **result.summary(),
            )
            await self._apply(record, result.actions)
            self._wake.set()  # look again right away: converge in small steps
        elif not self._state.checking:
            self.settled.set()
        # An adopted instance is being re-checked: that is no reason to say
        # "deploying" about a deployment that was running a moment ago.
        rechecking = (
            record.status is Status.RUNNING
            and result.status is Status.DEPLOYING
            and not result.actions
            and bool(self._state.checking)
        )
        changed = not rechecking and await self._store.set_status(
            self.id, result.status, result.status_reason
        )
        if changed:
            self._log.info(
                "status",
                deployment=record.name,
                status=result.status.value,
                reason=result.status_reason,
            )
            record = replace(record, status=result.status, status_reason=result.status_reason)
            self._record = record
            self._update_snapshot(record, result.status)
        if result.finished:
            await self._engine.remove_network(network_name(record.name))
            await self._store.purge(self.id)
            self._log.info("deleted", deployment=record.name)
            self.snapshot = None
            self._publish()
            return True, None
        return False, result.wake_at

    # --- readiness -----------------------------------------------------------

    def _track_readiness(
        self, record: DeploymentRecord, instances: list[Instance], now: float
    ) -> None:
        running = {
            i.container_id: i
            for i in instances
            if i.state is ContainerState.RUNNING and i.ip is not None
        }
        for cid in list(self._state.ready):
            inst = running.get(cid)
            if inst is None or inst.ip != self._state.ready[cid].ip:
                del self._state.ready[cid]
        for cid, ready in self._state.ready.items():
            slot = running[cid].slot
            health = self._state.health.get(slot)
            if health and health.failures and now - ready.since >= STABLE_AFTER_S:
                del self._state.health[slot]
        for cid in list(self._state.checking):
            if cid not in running:
                self._state.checking.pop(cid).cancel()
        ports = record.spec.http_ports
        if not ports:
            return
        for cid, inst in running.items():
            if cid not in self._state.ready and cid not in self._state.checking:
                assert inst.ip is not None
                task = asyncio.create_task(self._check_ready(inst, inst.ip, ports[0]))
                self._state.checking[cid] = task

    async def _check_ready(self, inst: Instance, ip: str, port: int) -> None:
        """Ready when the first HTTP port accepts a TCP connection (bounded wait)."""
        deadline = time.monotonic() + self._options.ready_timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(1.0):
                        _, writer = await asyncio.open_connection(ip, port)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    self._state.ready[inst.container_id] = _ReadyState(ip, time.monotonic())
                    self._log.info("instance_ready", instance=inst.container_name, address=ip)
                    return
                except (OSError, TimeoutError):
                    await asyncio.sleep(READY_POLL_S)
            if inst.container_id not in self._state.reported_unready:
                self._state.reported_unready.add(inst.container_id)
                await self._store.add_event(
                    self.id,
                    "not_ready",
                    f"instance {instance_name(inst.deployment, inst.slot)} does not accept "
                    f"connections on port {port} after {self._options.ready_timeout_s:.0f}s",
                    inst.revision,
                )
        finally:
            self._state.checking.pop(inst.container_id, None)
            self._wake.set()

    def _update_snapshot(self, record: DeploymentRecord, status: Status) -> None:
        ready = tuple(
            ReadyInstance(instance_name(i.deployment, i.slot), self._state.ready[i.container_id].ip)
            for i in sorted(self._instances, key=lambda i: (i.slot, i.revision))
            if i.container_id in self._state.ready
        )
        if record.intent is Intent.DELETE:
            snapshot = None
        else:
            snapshot = DeploymentSnapshot(
                name=record.name, status=status, ports=record.spec.http_ports, ready=ready
            )
        if snapshot != self.snapshot:
            self.snapshot = snapshot
            self._publish()

    # --- applying --------------------------------------------------------------

    async def _apply(self, record: DeploymentRecord, actions: tuple[Action, ...]) -> None:
        removes = [a for a in actions if a.kind is ActionKind.REMOVE]
        starts = [a for a in actions if a.kind is ActionKind.START]
        creates = [a for a in actions if a.kind is ActionKind.CREATE]
        if removes:
            for action in removes:
                self._state.ready.pop(action.container_id, None)
            self._update_snapshot(record, record.status)
            await asyncio.gather(*(self._remove(record, a) for a in removes))
        if starts:
            await asyncio.gather(*(self._restart(record, a) for a in starts))
        if creates:
            image = await self._resolve_image(record)
            if image is None:
                return
            await self._ensure_network(record)
            await asyncio.gather(*(self._create(record, image, a) for a in creates))

    async def _remove(self, record: DeploymentRecord, action: Action) -> None:
        inst = next((i for i in self._instances if i.container_id == action.container_id), None)
        if inst is not None and inst.ip is not None:
            await self._drain(inst.ip, record.spec.http_ports)
        self._log.info(
            "remove",
            deployment=record.name,
            container=action.container_id[:12],
            reason=action.reason,
        )
        await self._engine.remove(action.container_id, self._options.stop_timeout_s)

    async def _drain(self, ip: str, ports: tuple[int, ...]) -> None:
        """Out of the pool already; wait (bounded) for in-flight requests to finish."""
        deadline = time.monotonic() + self._options.drain_timeout_s
        while time.monotonic() < deadline:
            if all(self._sink.outstanding(ip, port) == 0 for port in ports):
                return
            await asyncio.sleep(0.05)

    async def _restart(self, record: DeploymentRecord, action: Action) -> None:
        slot = action.slot
        health = self._state.health.get(slot, SlotHealth())
        if action.reason != "created, not started":
            failures = health.failures + 1
            health = SlotHealth(
                failures=failures,
                retry_at=time.monotonic() + backoff_delay(failures),
                last_error=action.reason,
            )
            self._state.health[slot] = health
            await self._store.add_event(
                self.id,
                "restart",
                f"instance {instance_name(record.name, slot)} {action.reason}; "
                f"restart #{failures}, next backoff {backoff_delay(failures):.0f}s",
                record.revision,
            )
        await self._engine.start(action.container_id)

    async def _create(self, record: DeploymentRecord, image: str, action: Action) -> None:
        spec = record.spec
        name = container_name(record.name, record.revision, action.slot)
        self._log.info("create", deployment=record.name, container=name, reason=action.reason)
        container_id = await self._engine.create_instance(
            InstanceSpec(
                container_name=name,
                deployment_id=record.id,
                deployment=record.name,
                revision=record.revision,
                slot=action.slot,
                image=image,
                env=instance_env(record, action.slot),
                network=network_name(record.name),
                hostname=instance_name(record.name, action.slot),
                cpu=spec.resources.cpu,
                memory_mb=spec.resources.memory_mb,
                stop_timeout_s=self._options.stop_timeout_s,
            )
        )
        await self._engine.start(container_id)

    async def _ensure_network(self, record: DeploymentRecord) -> None:
        if not self._state.network_ok:
            await self._engine.ensure_network(network_name(record.name), record.name, record.id)
            self._state.network_ok = True

    async def _resolve_image(self, record: DeploymentRecord) -> str | None:
        """The image id this revision runs; pulled once per revision (``latest``: always)."""
        cached = self._state.image
        if cached is not None and cached[0] == record.revision:
            return cached[1]
        spec: DeploymentSpec = record.spec
        ref = spec.image_ref

        async def progress(line: str) -> None:
            await self._store.add_event(self.id, "pull", line, record.revision)

        try:
            result = await self._engine.ensure_image(
                ref, always_pull=not is_pinned_tag(spec.tag), progress=progress
            )
        except ImageNotFound as exc:
            self._state.block_failures += 1
            delay = backoff_delay(self._state.block_failures)
            self._state.blocked = Blocked(
                reason=f"image {ref} unavailable: {exc}", until=time.monotonic() + delay
            )
            await self._store.add_event(
                self.id, "pull_failed", f"{exc}; retry in {delay:.0f}s", record.revision
            )
            return None
        self._state.blocked = None
        self._state.block_failures = 0
        if result.warning:
            await self._store.add_event(self.id, "pull_warning", result.warning, record.revision)
        elif result.pulled:
            await self._store.add_event(self.id, "pulled", f"pulled {ref}", record.revision)
        self._state.image = (record.revision, result.image_id)
        return result.image_id
