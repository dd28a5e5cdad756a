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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import structlog

from patrd.control.host_limits import neighbour_table_warning, read_gc_thresh3
from patrd.control.probes import (
    TCP_POLL_S,
    Phase,
    ProbeStatus,
    http_probe,
    liveness_step,
    starting,
    startup_interval,
    startup_step,
    tcp_probe,
)
from patrd.control.reconcile import (
    STOP_FIRST,
    Action,
    ActionKind,
    Blocked,
    PlanInput,
    SlotHealth,
    backoff_delay,
    plan,
)
from patrd.control.route_table import DeploymentSnapshot, ReadyInstance, build_routes
from patrd.engine.cap_policy import SecurityPolicy, held_violations
from patrd.engine.config_mounts import directory_bytes, remove_config_dir, sync_config_dir
from patrd.engine.protocol import Engine
from patrd.kit.backoff import Backoff, BackoffState
from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.errors import EngineError, ImageNotFound, PatrdError, PullRefused, StoreError
from patrd.model.instances import (
    ContainerState,
    ImageResult,
    Instance,
    InstanceSpec,
    RegistryAuth,
    is_pinned_tag,
)
from patrd.model.naming import (
    container_name,
    instance_name,
    legacy_volume_name,
    network_name,
    volume_name,
)
from patrd.model.releases import Pin, pin_from_digest, pin_from_inspect
from patrd.model.replicas import effective_replicas
from patrd.model.spec import LOCAL_REGISTRY, DeploymentSpec
from patrd.model.urls import UrlRecord
from patrd.model.views import InstanceView
from patrd.proxy.router import RoutingTable
from patrd.state.crypto import SecretsKeyError
from patrd.state.store import Store
from patrd.state.vault import Vault

_SETTLING_ACTIONS = frozenset({"die", "kill", "oom", "stop"})
_SETTLE_DELAYS_S = (0.1, 0.5, 2.0)
STABLE_AFTER_S = 10.0  # a slot ready this long has its crash count reset
EVENTS_RETRY_CAP_S = 5.0  # Docker unreachable: try again at least this often
EVENTS_BACKOFF = Backoff(initial_s=1.0, cap_s=EVENTS_RETRY_CAP_S)
RECONCILE_BACKOFF = Backoff(initial_s=1.0, cap_s=30.0)  # one deployment's failed pass


def _unreachable(exc: EngineError) -> bool:
    """Docker itself is away (not this deployment's fault): say nothing to its status."""
    return "unreachable" in str(exc).lower()


class InstanceStartError(EngineError):
    """The engine refused to create or first start an instance (e.g. a user the image lacks).

    Unlike Docker being unreachable, this is the deployment's own problem: it is
    put into its status and events at once rather than only into the daemon log.
    """


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


def instance_env(
    record: DeploymentRecord, slot: int, user_env: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The user's env (secrets resolved) plus the variables patrd always sets (docs/env.md)."""
    special = {
        "PATR": "true",
        "DEPLOYMENT_ID": record.id,
        "DEPLOYMENT_NAME": record.name,
        "CONFIG_MAP_HASH": record.spec.config_map_hash,
        "PATRD_INSTANCE": str(slot),
        "PATRD_REVISION": str(record.revision),
    }
    return tuple(sorted({**user_env, **special}.items()))


async def registry_auth_for(
    spec: DeploymentSpec, ref: str, options: ControllerOptions, vault: Vault | None
) -> RegistryAuth | None:
    """The credentials a pull or digest query of ``ref`` sends: the deployment's
    ``registry_auth`` secret, else the node registry's generated credential."""
    if spec.registry_auth is not None:
        if vault is None:
            raise SecretsKeyError("registry_auth needs the secrets key")
        return await vault.registry_auth(spec, ref.split("/", 1)[0])
    if spec.registry in (LOCAL_REGISTRY, options.local_registry):
        return options.local_registry_auth
    return None


async def resolve_env(spec: DeploymentSpec, vault: Vault | None) -> dict[str, str]:
    """The user's env with secrets resolved (the vault decrypts them)."""
    if vault is not None:
        return dict(await vault.env_values(spec))
    if spec.secret_names:
        raise SecretsKeyError("this deployment uses secrets but the daemon has no key")
    return {k: str(v) for k, v in spec.env}


def instance_spec(
    record: DeploymentRecord,
    options: ControllerOptions,
    *,
    slot: int,
    template: str,
    image: str,
    user_env: Mapping[str, str],
    name: str,
) -> InstanceSpec:
    """The container an instance (slot) of ``record`` is made of; one-offs start from it too.

    Its volumes carry today's names; the caller replaces them with what
    ``Engine.ensure_volume`` answered (an adopted legacy name, patrd/model/naming.py).
    """
    spec = record.spec
    config_dir = None
    if spec.config_mounts and options.config_root is not None:
        config_dir = options.config_root / record.id
    return InstanceSpec(
        container_name=name,
        deployment_id=record.id,
        deployment=record.name,
        revision=record.revision,
        slot=slot,
        template=template,
        image=image,
        env=instance_env(record, slot, user_env),
        network=network_name(record.name),
        hostname=instance_name(record.name, slot),
        cpu=spec.resources.cpu,
        memory_mb=spec.resources.memory_mb,
        stop_timeout_s=options.stop_timeout_s,
        config_dir=str(config_dir) if config_dir is not None else None,
        volumes=tuple((volume_name(record.name, v.name, slot), v.path) for v in spec.volumes),
        extra_capabilities=spec.security.extra_capabilities,
        pids_limit=spec.security.pids_limit,
    )


class Controller:
    """Owns the deployment workers, the Docker event watch and orphan cleanup."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        sink: RouteSink,
        options: ControllerOptions,
        vault: Vault | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._sink = sink
        self._options = options
        self._vault = vault
        self._workers: dict[str, DeploymentWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake_all = asyncio.Event()
        self._synced = asyncio.Event()
        self._urls: tuple[UrlRecord, ...] = ()
        self._publish_pending = False
        self._log = structlog.get_logger("patrd.control.executor")

    @property
    def options(self) -> ControllerOptions:
        return self._options

    # --- ControllerView ----------------------------------------------------

    def wake(self, deployment_id: str | None = None) -> None:
        worker = self._workers.get(deployment_id) if deployment_id else None
        if worker is not None:
            worker.wake()
            return
        if deployment_id and self._synced.is_set():
            # A deployment just created (issue 20): its worker starts now and
            # lists its own containers; create → 200 no longer waits for a
            # resync's list of every container. The resync still follows (orphans).
            self._spawn(deployment_id)
        self._wake_all.set()

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        volumes = await self._engine.list_volumes(deployment)
        used = await asyncio.gather(
            *(asyncio.to_thread(directory_bytes, v.mountpoint) for v in volumes)
        )
        return {v.name: (v.slot, n) for v, n in zip(volumes, used, strict=True)}

    def instances(self, deployment_id: str) -> list[InstanceView]:
        worker = self._workers.get(deployment_id)
        return worker.views() if worker else []

    def listed_instances(self) -> list[Instance]:
        """Every deployment's containers as its worker last listed them (no Docker call).

        Issue 20: the metrics sampler listed all containers from Docker every
        interval (1,000 decoded every 5 s); the workers' lists are as fresh
        (Docker events and the resync refresh them).
        """
        return [i for w in self._workers.values() for i in w.listed]

    async def resolve_tag(self, record: DeploymentRecord) -> tuple[Pin, str | None]:
        """``redeploy``: what the tag points at now (no revision written).

        The registry is asked for the manifest digest (no pull: the request
        stays short; the rollout pulls by that digest). A registry that cannot
        be reached (or an image built on the node) falls back to the node's
        copy of the tag, with a warning.
        """
        spec = record.spec
        ref = spec.image_ref_via(self._options.local_registry)
        repo = ref[: -len(spec.tag) - 1]
        auth = await registry_auth_for(spec, ref, self._options, self._vault)
        try:
            pin = pin_from_digest(repo, await self._engine.remote_digest(ref, auth))
            warning = None
        except EngineError as exc:
            result = await self._engine.ensure_image(ref, always_pull=False, auth=auth)
            digests = await self._engine.repo_digests(result.image_id)
            pin = pin_from_inspect(result.image_id, digests, repo)
            warning = f"the registry did not answer ({exc}); this node's copy of {ref} was used"
            self._log.warning(
                "redeploy_registry_unreachable", deployment=record.name, error=str(exc)
            )
        self._log.info("redeploy_resolved", deployment=record.name, image=pin.ref)
        return pin, warning

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
        """The routes changed: rebuilt and sent once for all changes of this loop turn.

        Issue 20: at a restart every adopted instance turns ready within a few
        seconds, and each used to rebuild and send the whole table (O(N^2)).
        ``flush_routes`` sends at once what is pending (before a drain).
        """
        if not self._publish_pending:
            self._publish_pending = True
            asyncio.get_running_loop().call_soon(self.flush_routes)

    def flush_routes(self) -> None:
        if not self._publish_pending:
            return
        self._publish_pending = False
        snapshots = [w.snapshot for w in self._workers.values() if w.snapshot is not None]
        self._sink.set_table(
            build_routes(
                snapshots,
                self._options.base_domain,
                self._urls,
                redirect_default_urls=self._options.redirect_default_urls,
            )
        )

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
        # One Docker list for every deployment (not one per worker): each idle
        # worker gets its part, unless it passed or was woken meanwhile.
        marks = {d: w.generation for d, w in self._workers.items() if w.idle}
        try:
            listed = await self._engine.list_instances()
        except EngineError:
            for record in records:
                if record.id not in self._workers:
                    self._spawn(record.id)
            for worker in self._workers.values():
                worker.wake()  # each finds out for itself (and backs off)
            raise
        if not self._synced.is_set():  # once, at start (issue 20)
            warning = neighbour_table_warning(len(listed), read_gc_thresh3())
            if warning:
                self._log.warning("neighbour_table_small", detail=warning)
        by_deployment: dict[str, list[Instance]] = {}
        for inst in listed:
            by_deployment.setdefault(inst.deployment_id, []).append(inst)
        for record in records:
            # A new worker (daemon start: all of them) is spawned after the list
            # and starts from its part of it: no Docker list per deployment.
            new = record.id not in self._workers
            if new:
                self._spawn(record.id)
            worker = self._workers[record.id]
            if new or marks.get(record.id) == worker.generation:
                worker.wake(by_deployment.get(record.id, []))
            else:
                worker.wake()
        for dep_id in [d for d in self._workers if d not in known and self._tasks[d].done()]:
            del self._workers[dep_id]
            del self._tasks[dep_id]
        await self._collect_orphans(known, listed)
        self._urls = tuple(await self._store.list_urls())  # managed URLs (issue 4)
        self.publish()

    def _spawn(self, deployment_id: str) -> None:
        worker = DeploymentWorker(
            deployment_id,
            self._store,
            self._engine,
            self._sink,
            self._options,
            self.publish,
            self._vault,
            flush_routes=self.flush_routes,
        )
        self._workers[deployment_id] = worker
        self._tasks[deployment_id] = asyncio.create_task(
            worker.run(), name=f"deployment-{deployment_id[:8]}"
        )

    async def _collect_orphans(self, known: set[str], listed: list[Instance]) -> None:
        """Containers and networks labelled by patrd whose deployment is gone."""
        for inst in listed:
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
        backoff = BackoffState(EVENTS_BACKOFF)
        lost = False  # the stream broke: Docker restarting (or gone) until it answers again
        while True:
            try:
                if lost:
                    await self._engine.ping()
                    lost = False
                    self._engine_back()
                async for event in self._engine.events():
                    backoff.succeeded()
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
                if not lost:
                    retry_in = EVENTS_BACKOFF.delay(backoff.failures + 1)
                    self._log.warning("docker_events_lost", error=str(exc), retry_in=retry_in)
                lost = True
            self._wake_all.set()  # events may have been missed: resync everything
            await asyncio.sleep(backoff.failed(time.monotonic()))

    def _engine_back(self) -> None:
        """Docker answers again after an outage: what it stopped meanwhile did not crash.

        Without live-restore a Docker restart stops every container; the exits
        (and failed starts while it was going down) are not the apps' fault, so
        crash counts and backoffs start over and every worker looks at once.
        """
        self._log.info("docker_back", deployments=len(self._workers))
        for worker in self._workers.values():
            worker.forgive()

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
        vault: Vault | None = None,
        flush_routes: Callable[[], None] | None = None,
    ) -> None:
        self.id = deployment_id
        self._flush_routes = flush_routes  # sends a publish still pending (see _drain)
        self._vault = vault
        self._store = store
        self._engine = engine
        self._sink = sink
        self._options = options
        self._publish = publish
        self._wake = asyncio.Event()
        self._state = _WorkerState()
        self._instances: list[Instance] = []
        self._record: DeploymentRecord | None = None
        self._template = ""  # the target template, secret versions included
        self._policy_warned: int | None = None  # revision warned about (cap_policy)
        self.snapshot: DeploymentSnapshot | None = None
        self.settled = asyncio.Event()
        self._log = structlog.get_logger("patrd.control.executor").bind(deployment_id=deployment_id)
        # Bumped by every wake and at the start and end of every pass: a list
        # of containers taken while it stayed the same (and no pass ran) is
        # as good as the worker's own.
        self.generation = 0
        self.idle = True  # between passes
        self._prefetched: list[Instance] | None = None

    def wake(self, instances: list[Instance] | None = None) -> None:
        """Look again; ``instances``: this deployment's containers, just listed."""
        self.generation += 1
        self._prefetched = instances
        self._wake.set()

    def _wake_same_containers(self) -> None:
        """A probe result changes no container: the next pass may reuse the last list.

        Issue 20: at a restart every adopted instance turns ready at once, and
        a Docker list per ready instance (each scanning every container) made
        adoption O(N^2). Only when idle with no wake pending: then the last pass
        applied nothing and no Docker event came since it listed.
        """
        if self.idle and not self._wake.is_set():
            self.wake(list(self._instances))
        else:
            self._wake.set()

    @property
    def listed(self) -> list[Instance]:
        return self._instances

    def forgive(self) -> None:
        """Forget crash counts and backoffs (Docker restarted under us), and look again."""
        self._state.health.clear()
        self.wake()

    def views(self) -> list[InstanceView]:
        record = self._record
        if record is None:
            return []
        template = self._template or record.template
        views = []
        for i in sorted(self._instances, key=lambda i: (i.slot, i.revision)):
            probe = self._state.probes.get(i.container_id)
            views.append(
                InstanceView(
                    name=instance_name(i.deployment, i.slot),
                    container_id=i.container_id,
                    revision=i.revision,
                    slot=i.slot,
                    state=i.state.value,
                    ready=i.container_id in self._state.ready,
                    address=i.ip,
                    restarts=self._state.health.get(i.slot, SlotHealth()).failures,
                    current=i.template == template,
                    probe=probe.phase.value if probe else "",
                    probe_detail=probe.last_detail if probe else "",
                    liveness_failures=probe.liveness_failures if probe else 0,
                )
            )
        return views

    async def run(self) -> None:
        backoff = BackoffState(RECONCILE_BACKOFF)
        wake_at: float | None = None
        try:
            while True:
                self._wake.clear()
                self.generation += 1
                self.idle = False
                try:
                    finished, wake_at = await self._pass()
                    backoff.succeeded()
                    self._state.start_error = ""
                except Exception as exc:
                    delay = backoff.failed(time.monotonic())
                    # Docker, the database, a missing secret, or a bug: this
                    # deployment retries with backoff; the others are untouched.
                    if isinstance(exc, InstanceStartError):
                        await self._report_start_error(str(exc))
                    if isinstance(exc, PatrdError):
                        self._log.warning("reconcile_failed", error=str(exc), retry_in=delay)
                    else:
                        self._log.exception("reconcile_crashed", retry_in=delay)
                    self._state.network_ok = False
                    wake_at = time.monotonic() + delay
                    finished = False
                finally:
                    self.generation += 1
                    self.idle = True
                if finished:
                    return
                # The controller's resync wakes every worker with its containers
                # listed once for all; this worker's own timer is the fallback.
                timeout = 2 * self._options.resync_interval_s
                if wake_at is not None:
                    timeout = max(0.0, min(timeout, wake_at - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            for task in self._state.probing.values():
                task.cancel()
            await asyncio.gather(*self._state.probing.values(), return_exceptions=True)
            self.settled.set()

    async def _pass(self) -> tuple[bool, float | None]:
        record = await self._store.get_by_id(self.id)
        if record is None:
            self.snapshot = None
            self._publish()
            return True, None
        self._record = record
        await self._warn_policy(record)
        instances, self._prefetched = self._prefetched, None
        if instances is None:
            instances = await self._engine.list_instances(self.id)
        self._instances = instances
        await self._note_vanished(record, instances)
        now = time.monotonic()
        self._log.debug(
            "pass",
            deployment=record.name,
            instances=",".join(f"{i.container_id[:8]}:{i.state.value}" for i in instances),
        )
        self._template = await self._target_template(record)
        await self._sync_config(record)
        self._track_probes(record, instances, now)
        stable_template = await self._stable_template(record)
        result = plan(
            PlanInput(
                intent=record.intent,
                template=self._template,
                replicas=effective_replicas(record),
                stop_first=bool(record.spec.volumes),
                instances=instances,
                ready=frozenset(self._state.ready),
                failed=dict(self._state.failed),
                unhealthy=dict(self._state.unhealthy),
                health=dict(self._state.health),
                blocked=self._state.blocked,
                stable_template=stable_template,
                previous_status=record.status,
                now=now,
            )
        )
        self._update_snapshot(record, result.status)
        if result.rollout_failed:
            await self._fail_rollout(record, result.rollout_failed)
            self._wake.set()
            return False, None
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
        elif not self._state.probing or all(
            p.phase is not Phase.STARTING for p in self._state.probes.values()
        ):
            self.settled.set()
        if result.converged and record.intent is Intent.RUN:
            await self._complete_rollout(record)
        # An adopted instance is being re-checked: that is no reason to say
        # "deploying" about a deployment that was running a moment ago.
        rechecking = (
            record.status is Status.RUNNING
            and result.status is Status.DEPLOYING
            and not result.actions
            and any(p.phase is Phase.STARTING for p in self._state.probes.values())
            and not record.in_rollout
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
            await self._finish_volumes(record)
            if self._options.config_root is not None:
                await asyncio.to_thread(remove_config_dir, self._options.config_root / record.id)
            await self._store.purge(self.id)
            self._log.info("deleted", deployment=record.name)
            self.snapshot = None
            self._publish()
            return True, None
        hold_until = self._state.hold_until
        if hold_until is not None and hold_until <= time.monotonic():
            self._state.hold_until = None  # past the bound: the route says 503 again
            self._update_snapshot(record, record.status)
            hold_until = None
        wakes = [t for t in (result.wake_at, hold_until) if t is not None]
        return False, min(wakes) if wakes else None

    async def _warn_policy(self, record: DeploymentRecord) -> None:
        """Stored before the policy (or before the operator narrowed it): keeps
        running, says so once per revision; its next change must drop it."""
        policy = self._options.security_policy
        if policy is None or self._policy_warned == record.revision:
            return
        self._policy_warned = record.revision
        held = held_violations(record.spec.security, policy)
        if held and record.intent is not Intent.DELETE:
            message = (
                f"holds {', '.join(held)}, which the security policy no longer grants; "
                "it keeps running, and the next change must drop it"
            )
            self._log.warning("security_policy_violation", deployment=record.name, held=held)
            await self._event("security_warning", message, record.revision)

    async def _report_start_error(self, message: str) -> None:
        """Status ``errored`` with the engine's reason, and one event per new message."""
        record = self._record
        if record is None:
            return
        try:
            if message != self._state.start_error:
                await self._store.add_event(self.id, "start_failed", message, record.revision)
            self._state.start_error = message
            if await self._store.set_status(self.id, Status.ERRORED, message):
                record = replace(record, status=Status.ERRORED, status_reason=message)
                self._record = record
                self._update_snapshot(record, Status.ERRORED)
        except StoreError as exc:
            self._log.warning("start_error_not_recorded", message=message, error=str(exc))

    async def _note_vanished(self, record: DeploymentRecord, instances: list[Instance]) -> None:
        """An event for each container that disappeared without patrd removing it."""
        present = {i.container_id for i in instances}
        state = self._state
        for cid, slot in state.seen.items():
            if cid not in present and cid not in state.removed and record.intent is Intent.RUN:
                await self._event(
                    "vanished",
                    f"instance {instance_name(record.name, slot)} vanished (its container was "
                    "removed outside patrd); recreating it",
                    record.revision,
                )
        state.removed &= present
        state.seen = {i.container_id: i.slot for i in instances}

    async def _stable_template(self, record: DeploymentRecord) -> str | None:
        if record.stable_revision is None:
            return None
        if record.stable_revision == record.revision:
            return self._template
        stable = await self._store.get_revision(self.id, record.stable_revision)
        if stable is None:
            return None
        versions = await self._secret_versions(stable.spec)
        return stable.spec.instance_template(stable.pinned_image, versions)

    async def _target_template(self, record: DeploymentRecord) -> str:
        versions = await self._secret_versions(record.spec)
        return record.spec.instance_template(record.pinned_image, versions)

    async def _secret_versions(self, spec: DeploymentSpec) -> dict[str, int]:
        if not spec.secret_names or self._vault is None:
            return {}
        return await self._vault.versions(spec.secret_names)

    async def _sync_config(self, record: DeploymentRecord) -> None:
        """Write the config files in place; running containers see them at once."""
        root = self._options.config_root
        if root is None or record.intent is Intent.DELETE:
            return
        directory = root / record.id
        if self._state.config_revision == record.revision:
            return  # written for this revision already (a pass runs on every wake)
        if not record.spec.config_mounts and not directory.exists():
            self._state.config_revision = record.revision
            return
        changed = await asyncio.to_thread(sync_config_dir, directory, record.spec.config_mounts)
        self._state.config_revision = record.revision
        if changed:
            await self._store.add_event(
                self.id, "config", f"config files updated: {', '.join(changed)}", record.revision
            )

    async def _finish_volumes(self, record: DeploymentRecord) -> None:
        """On delete: remove the volumes only when the delete asked for it."""
        if not record.delete_volumes:
            return
        for volume in await self._engine.list_volumes(record.name):
            await self._engine.remove_volume(volume.name)

    # --- rollouts --------------------------------------------------------------

    async def _complete_rollout(self, record: DeploymentRecord) -> None:
        if record.stable_revision == record.revision:
            return
        image = await self._resolve_image(record)
        if image is None:
            return
        if await self._store.complete_rollout(self.id, record.revision, image):
            self._log.info("rollout_done", deployment=record.name, revision=record.revision)
            self._state.health.clear()

    async def _fail_rollout(self, record: DeploymentRecord, reason: str) -> None:
        self._state.hold_until = None
        cached = self._state.image
        image = cached[1] if cached and cached[0] == record.revision else None
        if await self._store.fail_rollout(self.id, record.revision, reason, image):
            self._log.warning(
                "rollout_failed", deployment=record.name, revision=record.revision, reason=reason
            )
            self._state.health.clear()
            self._state.blocked = None

    # --- probes ----------------------------------------------------------------

    def _track_probes(
        self, record: DeploymentRecord, instances: list[Instance], now: float
    ) -> None:
        running = {
            i.container_id: i
            for i in instances
            if i.state is ContainerState.RUNNING and i.ip is not None
        }
        state = self._state
        present = {i.container_id for i in instances}
        for cid in list(state.ready):
            inst = running.get(cid)
            if inst is None or inst.ip != state.ready[cid].ip:
                del state.ready[cid]
        for cid in list(state.probing):
            if cid not in running:
                state.probing.pop(cid).cancel()
        for table in (state.probes, state.unhealthy):
            for cid in [c for c in table if c not in running]:
                del table[cid]
        for cid in [c for c in state.failed if c not in present]:
            del state.failed[cid]
        for cid, ready in state.ready.items():
            slot = running[cid].slot
            health = state.health.get(slot)
            if health and health.failures and now - ready.since >= STABLE_AFTER_S:
                del state.health[slot]
        if not record.spec.http_ports:
            return
        for cid, inst in running.items():
            if cid in state.probing or cid in state.failed or cid in state.unhealthy:
                continue
            if cid in state.probes:
                # Checked already: ready (its liveness task, if any, runs), or
                # failed/unhealthy and the plan acts. Never probe twice.
                continue
            assert inst.ip is not None
            # Starting from now, not from when the task first runs: the plan of
            # this very pass sees an adopted instance as being re-checked (no
            # "deploying" status written and taken back at every restart).
            state.probes[cid] = starting(now)
            task = asyncio.create_task(self._probe(inst, inst.ip, record.spec))
            state.probing[cid] = task

    async def _probe(self, inst: Instance, ip: str, spec: DeploymentSpec) -> None:
        """Startup check, then (if configured) liveness, for one running container."""
        cid = inst.container_id
        name = instance_name(inst.deployment, inst.slot)
        startup = spec.startup_probe
        if startup is not None:
            budget, interval = startup.budget_s, startup_interval(startup.period_s)
        else:
            budget, interval = self._options.ready_timeout_s, TCP_POLL_S
        status = starting(time.monotonic())
        self._state.probes[cid] = status
        try:
            while status.phase is Phase.STARTING:
                if startup is not None:
                    ok, detail = await http_probe(ip, startup.port, startup.path, startup.timeout_s)
                else:
                    ok, detail = await tcp_probe(ip, spec.http_ports[0])
                status = startup_step(status, ok, detail, time.monotonic(), budget)
                self._state.probes[cid] = status
                if status.phase is Phase.STARTING:
                    await asyncio.sleep(interval)
            if status.phase is Phase.FAILED:
                what = (
                    f"startup probe {startup.path} on port {startup.port}"
                    if startup
                    else f"port {spec.http_ports[0]}"
                )
                reason = f"{what} did not pass within {budget:g}s (last: {status.last_detail})"
                self._state.failed[cid] = reason
                await self._store.add_event(
                    self.id, "startup_failed", f"instance {name}: {reason}", inst.revision
                )
                self._log.warning("startup_failed", instance=inst.container_name, reason=reason)
                return
            self._state.ready[cid] = _ReadyState(ip, time.monotonic())
            self._state.hold_until = None  # held requests go to this instance now
            if self._record is not None:  # routed now, not a pass later (issue 20)
                self._update_snapshot(self._record, self._record.status)
            self._log.info("instance_ready", instance=inst.container_name, address=ip)
            self._wake_same_containers()
            liveness = spec.liveness_probe
            if liveness is None:
                return
            while True:
                await asyncio.sleep(liveness.period_s)
                ok, detail = await http_probe(ip, liveness.port, liveness.path, liveness.timeout_s)
                status = liveness_step(
                    status, ok, detail, time.monotonic(), liveness.failure_threshold
                )
                self._state.probes[cid] = status
                if status.phase is Phase.UNHEALTHY:
                    break
            # Out of the pool first, then the plan restarts it.
            self._state.ready.pop(cid, None)
            if self._record is not None:
                self._update_snapshot(self._record, self._record.status)
            reason = (
                f"liveness probe {liveness.path} failed {status.liveness_failures} times "
                f"(last: {status.last_detail})"
            )
            self._state.unhealthy[cid] = reason
            await self._store.add_event(
                self.id, "unhealthy", f"instance {name}: {reason}", inst.revision
            )
            self._log.warning("instance_unhealthy", instance=inst.container_name, reason=reason)
        finally:
            self._state.probing.pop(cid, None)
            self._wake.set()

    def _update_snapshot(self, record: DeploymentRecord, status: Status) -> None:
        ready = tuple(
            ReadyInstance(instance_name(i.deployment, i.slot), self._state.ready[i.container_id].ip)
            for i in sorted(self._instances, key=lambda i: (i.slot, i.revision))
            if i.container_id in self._state.ready
        )
        hold_until = self._state.hold_until
        holding = (
            hold_until is not None
            and time.monotonic() < hold_until
            and record.intent is Intent.RUN
            and not ready
        )
        if record.intent is Intent.DELETE:
            snapshot = None
        else:
            snapshot = DeploymentSnapshot(
                name=record.name,
                status=status,
                ports=record.spec.http_ports,
                ready=ready,
                holding=holding,
            )
        if snapshot != self.snapshot:
            self.snapshot = snapshot
            self._publish()

    # --- applying --------------------------------------------------------------

    async def _apply(self, record: DeploymentRecord, actions: tuple[Action, ...]) -> None:
        by_kind: dict[ActionKind, list[Action]] = {kind: [] for kind in ActionKind}
        for action in actions:
            by_kind[action.kind].append(action)
        leaving = by_kind[ActionKind.REMOVE] + by_kind[ActionKind.RESTART]
        if any(a.reason == STOP_FIRST for a in by_kind[ActionKind.REMOVE]):
            # Its replacement starts once it is gone: new requests wait for it
            # (bounded) in the proxy instead of getting 503 meanwhile.
            self._state.hold_until = time.monotonic() + self._options.pause_timeout_s
        if leaving:
            for action in leaving:
                self._state.ready.pop(action.container_id, None)
            self._update_snapshot(record, record.status)
        # Creates first: a replacement starts while the old instance drains.
        if by_kind[ActionKind.CREATE]:
            image = await self._resolve_image(record)
            if image is not None:
                await self._ensure_network(record)
                await asyncio.gather(
                    *(self._create(record, image, a) for a in by_kind[ActionKind.CREATE])
                )
        await asyncio.gather(
            *(self._remove(record, a) for a in by_kind[ActionKind.REMOVE]),
            *(self._start(record, a) for a in by_kind[ActionKind.START]),
            *(self._restart(record, a) for a in by_kind[ActionKind.RESTART]),
        )

    def _count_failure(self, record: DeploymentRecord, action: Action) -> str:
        health = self._state.health.get(action.slot, SlotHealth())
        failures = health.failures + 1
        delay = backoff_delay(failures)
        self._state.health[action.slot] = SlotHealth(
            failures=failures,
            retry_at=time.monotonic() + delay,
            last_error=action.reason,
        )
        return f"failure #{failures}, next attempt after {delay:g}s"

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
        if action.failure:
            note = self._count_failure(record, action)
            await self._store.add_event(
                self.id,
                "failed_start",
                f"instance {instance_name(record.name, action.slot)} removed: "
                f"{action.reason}; {note}",
                record.revision,
            )
        keep_logs = self._options.on_remove
        if keep_logs is not None and inst is not None and record.intent is not Intent.DELETE:
            await keep_logs(inst)
        self._state.removed.add(action.container_id)
        await self._engine.remove(action.container_id, self._options.stop_timeout_s)
        self._forget(action.container_id)
        if record.spec.volumes and record.intent is Intent.RUN:
            replicas = effective_replicas(record)
            if action.slot >= replicas and not any(
                i.slot == action.slot and i.container_id != action.container_id
                for i in self._instances
            ):
                # Scale-down was confirmed at the API: the excess volumes go too
                # (found by their labels: today's name or an adopted older one).
                wanted = {v.name for v in record.spec.volumes}
                for found in await self._engine.list_volumes(record.name):
                    if found.slot == action.slot and found.volume in wanted:
                        await self._engine.remove_volume(found.name)

    async def _drain(self, ip: str, ports: tuple[int, ...]) -> None:
        """Out of the pool already; wait (bounded) for in-flight requests to finish."""
        if self._flush_routes is not None:
            self._flush_routes()  # the table without it reaches the proxy before we count
        deadline = time.monotonic() + self._options.drain_timeout_s
        while time.monotonic() < deadline:
            if all(self._sink.outstanding(ip, port) == 0 for port in ports):
                return
            await asyncio.sleep(0.05)

    async def _start(self, record: DeploymentRecord, action: Action) -> None:
        if action.failure:
            note = self._count_failure(record, action)
            await self._event(
                "restart",
                f"instance {instance_name(record.name, action.slot)} {action.reason}; "
                f"restarting ({note})",
                record.revision,
            )
        # Not InstanceStartError: starting an existing container again fails
        # for passing reasons too (dockerd shutting down: "transport is closing");
        # the crash count and backoff judge those. A fresh container that cannot
        # start is reported at once by _create.
        await self._engine.start(action.container_id)

    async def _restart(self, record: DeploymentRecord, action: Action) -> None:
        note = self._count_failure(record, action)
        await self._event(
            "restart",
            f"instance {instance_name(record.name, action.slot)} unhealthy; restarting ({note})",
            record.revision,
        )
        inst = next((i for i in self._instances if i.container_id == action.container_id), None)
        if inst is not None and inst.ip is not None:
            await self._drain(inst.ip, record.spec.http_ports)
        self._forget(action.container_id)
        await self._engine.restart(action.container_id, self._options.stop_timeout_s)
        self._forget(action.container_id)

    async def _event(self, kind: str, message: str, revision: int | None) -> None:
        """Best effort: a full disk or a locked database must not keep a crashed
        instance down; the restart matters more than its history line."""
        try:
            await self._store.add_event(self.id, kind, message, revision)
        except StoreError as exc:
            self._log.warning("event_not_recorded", kind=kind, message=message, error=str(exc))

    def _forget(self, container_id: str) -> None:
        state = self._state
        state.ready.pop(container_id, None)
        state.probes.pop(container_id, None)
        state.unhealthy.pop(container_id, None)
        task = state.probing.pop(container_id, None)
        if task is not None:
            task.cancel()

    async def _create(self, record: DeploymentRecord, image: str, action: Action) -> None:
        spec = record.spec
        name = container_name(record.name, record.revision, action.slot)
        self._log.info("create", deployment=record.name, container=name, reason=action.reason)
        user_env = await resolve_env(spec, self._vault)
        wanted = instance_spec(
            record,
            self._options,
            slot=action.slot,
            template=self._template,
            image=image,
            user_env=user_env,
            name=name,
        )
        if wanted.config_dir is not None:
            await asyncio.to_thread(sync_config_dir, Path(wanted.config_dir), spec.config_mounts)
        mounts = []
        for v in spec.volumes:
            docker_volume = await self._engine.ensure_volume(
                volume_name(record.name, v.name, action.slot),
                record.name,
                v.name,
                action.slot,
                adopt=legacy_volume_name(record.name, v.name, action.slot),
            )
            mounts.append((docker_volume, v.path))
        wanted = replace(wanted, volumes=tuple(mounts))
        try:
            container_id = await self._engine.create_instance(wanted)
            await self._engine.start(container_id)
        except EngineError as exc:
            if isinstance(exc, ImageNotFound) or _unreachable(exc):
                raise
            raise InstanceStartError(f"instance {wanted.hostname} could not start: {exc}") from exc

    async def _ensure_network(self, record: DeploymentRecord) -> None:
        if not self._state.network_ok:
            await self._engine.ensure_network(network_name(record.name), record.name, record.id)
            self._state.network_ok = True

    async def _resolve_image(self, record: DeploymentRecord) -> str | None:
        """The image id this revision runs (docs/design.md, "Pinned releases").

        A revision that has a pin (a push, a revert, a redeploy, or one carried
        from the revision before it) runs exactly that: the image id when it
        is on the node, else a pull by digest. Never the tag again. Only an
        unresolved revision (create, image or tag changed) resolves the tag,
        by the pull policy (``latest``: pulled), and records the pin. Any pull
        is refused while the disk guard says the disk is low.
        """
        cached = self._state.image
        if cached is not None and cached[0] == record.revision:
            return cached[1]
        spec: DeploymentSpec = record.spec
        ref = spec.image_ref_via(self._options.local_registry)
        pinned, image_id, digest_ref = await self._store.revision_pin(self.id, record.revision)

        async def progress(line: str) -> None:
            await self._store.add_event(self.id, "pull", line, record.revision)

        auth = await registry_auth_for(spec, ref, self._options, self._vault)
        guard = self._options.pull_guard
        refusal = ((await guard()) if guard is not None else None) or ""
        wanted = pinned or digest_ref or image_id or ref
        try:
            if pinned or image_id or digest_ref:
                result = await self._ensure_pinned(
                    pinned, image_id, digest_ref, progress, auth, refusal
                )
            else:
                result = await self._engine.ensure_image(
                    ref,
                    always_pull=not is_pinned_tag(spec.tag),
                    progress=progress,
                    auth=auth,
                    refuse_pull=refusal,
                )
        except PullRefused as exc:
            self._state.block_failures += 1
            delay = min(backoff_delay(self._state.block_failures), 30.0)
            self._state.blocked = Blocked(
                reason=f"image {wanted}: {exc}", until=time.monotonic() + delay
            )
            await self._store.add_event(
                self.id, "pull_refused", f"{exc}; retry in {delay:.0f}s", record.revision
            )
            return None
        except ImageNotFound as exc:
            self._state.block_failures += 1
            delay = backoff_delay(self._state.block_failures)
            self._state.blocked = Blocked(
                reason=f"image {wanted} unavailable: {exc}", until=time.monotonic() + delay
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
            await self._store.add_event(self.id, "pulled", f"pulled {wanted}", record.revision)
        if result.fresh:  # patrd brought it: patrd may remove it later (patrd/engine/imagegc.py)
            await self._store.record_pull(result.image_id, wanted, self.id, record.revision)
        if image_id is None:
            if digest_ref is None:
                repo = ref[: -len(spec.tag) - 1]
                pin = pin_from_inspect(
                    result.image_id, await self._engine.repo_digests(result.image_id), repo
                )
                digest_ref = pin.ref if pin.digest is not None else None
            await self._store.record_image(self.id, record.revision, result.image_id, digest_ref)
        self._state.image = (record.revision, result.image_id)
        return result.image_id

    async def _ensure_pinned(
        self,
        pinned: str | None,
        image_id: str | None,
        digest_ref: str | None,
        progress: Callable[[str], Awaitable[None]],
        auth: RegistryAuth | None,
        refusal: str,
    ) -> ImageResult:
        """The pinned image: by id when the node has it, else pulled by its digest."""
        pull_ref = digest_ref or (pinned if pinned is not None and "@" in pinned else None)
        local = image_id or (pinned if pull_ref is None else None)
        if local is not None:
            try:
                return await self._engine.ensure_image(local, always_pull=False, auth=auth)
            except ImageNotFound:
                if pull_ref is None:
                    raise ImageNotFound(
                        f"image {local[:19]} is no longer on the node and has no registry "
                        "digest to pull it by"
                    ) from None
        assert pull_ref is not None
        return await self._engine.ensure_image(
            pull_ref, always_pull=False, progress=progress, auth=auth, refuse_pull=refusal
        )
