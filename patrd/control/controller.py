"""The controller: owns one worker per deployment, the Docker event watch,
the periodic resync and orphan cleanup, and publishes the routing table.

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

import structlog

from patrd.control.host_limits import neighbour_table_warning, read_gc_thresh3
from patrd.control.instances import registry_auth_for
from patrd.control.options import ControllerOptions, RouteSink
from patrd.control.route_table import build_routes
from patrd.control.worker import DeploymentWorker
from patrd.engine.config_mounts import directory_bytes
from patrd.engine.protocol import Engine
from patrd.kit.backoff import Backoff, BackoffState
from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import EngineError, StoreError
from patrd.model.instances import Instance
from patrd.model.releases import Pin, pin_from_digest, pin_from_inspect
from patrd.model.urls import UrlRecord
from patrd.model.views import InstanceView
from patrd.state.store import Store
from patrd.state.vault import Vault

_SETTLING_ACTIONS = frozenset({"die", "kill", "oom", "stop"})
_SETTLE_DELAYS_S = (0.1, 0.5, 2.0)
EVENTS_RETRY_CAP_S = 5.0  # Docker unreachable: try again at least this often
EVENTS_BACKOFF = Backoff(initial_s=1.0, cap_s=EVENTS_RETRY_CAP_S)


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
        self._log = structlog.get_logger("patrd.control.controller")

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
            # A deployment just created: its worker starts now and lists its
            # own containers, so create → 200 does not wait for a resync's list
            # of every container. The resync still follows (orphans).
            self._spawn(deployment_id)
        self._wake_all.set()

    def listed_instances(self) -> list[Instance]:
        """Every deployment's containers as its worker last listed them (no Docker call).

        The metrics sampler used to list every container from Docker each
        interval (1,000 decoded every 5 s); the workers' lists are as fresh
        (Docker events and the resync refresh them).
        """
        return [i for w in self._workers.values() for i in w.listed]

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        volumes = await self._engine.list_volumes(deployment)
        used = await asyncio.gather(
            *(asyncio.to_thread(directory_bytes, v.mountpoint) for v in volumes)
        )
        return {v.name: (v.slot, n) for v, n in zip(volumes, used, strict=True)}

    def instances(self, deployment_id: str) -> list[InstanceView]:
        worker = self._workers.get(deployment_id)
        return worker.views() if worker else []

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

        At a restart every adopted instance turns ready within a few seconds,
        and each used to rebuild and send the whole table (O(N^2)).
        ``flush_routes`` sends what is pending at once (before a drain).
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
        if not self._synced.is_set():  # once, at start
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
        self._urls = tuple(await self._store.list_urls())  # managed URLs
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
