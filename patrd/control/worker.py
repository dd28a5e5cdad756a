"""One deployment's worker: each pass re-reads desired state (store) and actual
state (engine), plans (reconcile.py) and applies the plan (steps.py).

The only writer of its deployment's containers. Passes run when woken (API
calls, Docker events, the controller's resync) or when a backoff expires; a
failed pass backs off without touching any other deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import structlog

from patrd.control.decisions import hide_status, waits_to_announce
from patrd.control.images import ImageResolver
from patrd.control.instances import InstanceStartError
from patrd.control.options import ControllerOptions, RouteSink
from patrd.control.probing import Probes
from patrd.control.reconcile import PlanInput, SlotHealth, plan
from patrd.control.route_table import DeploymentSnapshot, ReadyInstance
from patrd.control.steps import Steps
from patrd.control.worker_state import WorkerContext
from patrd.engine.cap_policy import held_violations
from patrd.engine.config_mounts import remove_config_dir, sync_config_dir
from patrd.engine.protocol import Engine
from patrd.kit.backoff import Backoff, BackoffState
from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.errors import PatrdError, StoreError
from patrd.model.instances import Instance
from patrd.model.naming import instance_name, network_name
from patrd.model.replicas import effective_replicas
from patrd.model.spec import DeploymentSpec
from patrd.model.views import InstanceView
from patrd.state.store import Store
from patrd.state.vault import Vault

RECONCILE_BACKOFF = Backoff(initial_s=1.0, cap_s=30.0)  # one deployment's failed pass


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
        log = structlog.get_logger("patrd.control.worker").bind(deployment_id=deployment_id)
        ctx = WorkerContext(
            deployment_id, store, engine, sink, options, vault, log, flush_routes=flush_routes
        )
        self._ctx = ctx
        self._vault = vault
        self._store = store
        self._engine = engine
        self._options = options
        self._state = ctx.state
        self._log = log
        self._publish = publish
        self._images = ImageResolver(ctx)
        self._probes = Probes(ctx, self._refresh, self._wake_same_containers)
        self._steps = Steps(ctx, self._images, self._update_snapshot)
        self._policy_warned: int | None = None  # revision warned about (cap_policy)
        self.snapshot: DeploymentSnapshot | None = None
        self.settled = asyncio.Event()
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
        self._ctx.wake.set()

    def _wake_same_containers(self) -> None:
        """A probe result changes no container: the next pass may reuse the last list.

        At a restart every adopted instance turns ready at once, and a Docker
        list per ready instance (each scanning every container) made adoption
        O(N^2). Only when idle with no wake pending: then the last pass applied
        nothing and no Docker event came since it listed.
        """
        if self.idle and not self._ctx.wake.is_set():
            self.wake(list(self._ctx.instances))
        else:
            self._ctx.wake.set()

    @property
    def listed(self) -> list[Instance]:
        """This deployment's containers as the last pass listed them."""
        return self._ctx.instances

    def forgive(self) -> None:
        """Forget crash counts and backoffs (Docker restarted under us), and look again."""
        self._state.health.clear()
        self.wake()

    def views(self) -> list[InstanceView]:
        record = self._ctx.record
        if record is None:
            return []
        template = self._ctx.template or record.template
        views = []
        for i in sorted(self._ctx.instances, key=lambda i: (i.slot, i.revision)):
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
                    waiting_for=i.waiting_for,
                )
            )
        return views

    async def run(self) -> None:
        backoff = BackoffState(RECONCILE_BACKOFF)
        wake_at: float | None = None
        try:
            while True:
                self._ctx.wake.clear()
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
                        await self._ctx.wake.wait()
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
        self._ctx.record = record
        await self._warn_policy(record)
        instances, self._prefetched = self._prefetched, None
        if instances is None:
            instances = await self._engine.list_instances(self.id)
        self._ctx.instances = instances
        await self._note_vanished(record, instances)
        await self._note_engine_errors(record, instances)
        now = time.monotonic()
        self._log.debug(
            "pass",
            deployment=record.name,
            instances=",".join(f"{i.container_id[:8]}:{i.state.value}" for i in instances),
        )
        self._ctx.template = await self._target_template(record)
        await self._sync_config(record)
        self._probes.track(record, instances, now)
        stable_template = await self._stable_template(record)
        result = plan(
            PlanInput(
                intent=record.intent,
                template=self._ctx.template,
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
        await self._announce_waits(record, result.waiting)
        if result.rollout_failed:
            await self._fail_rollout(record, result.rollout_failed)
            self._ctx.wake.set()
            return False, None
        if result.actions:
            self._log.info(
                "plan",
                deployment=record.name,
                revision=record.revision,
                status=result.status.value,
                **result.summary(),
            )
            await self._steps.apply(record, result.actions)
            self._ctx.wake.set()  # look again right away: converge in small steps
        elif not self._state.probing or not self._probes.starting():
            self.settled.set()
        if result.converged and record.intent is Intent.RUN:
            await self._complete_rollout(record)
        hidden = hide_status(
            record.status,
            result.status,
            has_actions=bool(result.actions),
            rechecking=self._probes.starting(),
            in_rollout=record.in_rollout,
        )
        changed = not hidden and await self._store.set_status(
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
            self._ctx.record = record
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

    async def _announce_waits(self, record: DeploymentRecord, waiting: Mapping[int, str]) -> None:
        """One event when a slot starts waiting for the node that holds its volume data."""
        for slot, node in sorted(waits_to_announce(self._state.waiting, waiting).items()):
            message = (
                f"instance {instance_name(record.name, slot)} is waiting for node {node} "
                "that holds its volume data"
            )
            self._log.warning("waiting_for_node", deployment=record.name, slot=slot, node=node)
            await self._ctx.event("waiting_for_node", message, record.revision)
        self._state.waiting = dict(waiting)

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
            await self._ctx.event("security_warning", message, record.revision)

    async def _report_start_error(self, message: str) -> None:
        """Status ``errored`` with the engine's reason, and one event per new message."""
        record = self._ctx.record
        if record is None:
            return
        try:
            if message != self._state.start_error:
                await self._store.add_event(self.id, "start_failed", message, record.revision)
            self._state.start_error = message
            if await self._store.set_status(self.id, Status.ERRORED, message):
                record = replace(record, status=Status.ERRORED, status_reason=message)
                self._ctx.record = record
                self._update_snapshot(record, Status.ERRORED)
        except StoreError as exc:
            self._log.warning("start_error_not_recorded", message=message, error=str(exc))

    async def _note_engine_errors(
        self, record: DeploymentRecord, instances: list[Instance]
    ) -> None:
        """One event per new engine error of a slot (Swarm: a node could not pull)."""
        errors = self._state.engine_errors
        for inst in instances:
            if inst.error and errors.get(inst.slot) != inst.error:
                errors[inst.slot] = inst.error
                name = instance_name(record.name, inst.slot)
                await self._ctx.event(
                    "engine_error", f"instance {name}: {inst.error}", inst.revision
                )

    async def _note_vanished(self, record: DeploymentRecord, instances: list[Instance]) -> None:
        """An event for each container that disappeared without patrd removing it."""
        present = {i.container_id for i in instances}
        state = self._state
        for cid, slot in state.seen.items():
            if cid not in present and cid not in state.removed and record.intent is Intent.RUN:
                await self._ctx.event(
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
            return self._ctx.template
        stable = await self._store.get_revision(self.id, record.stable_revision)
        if stable is None:
            return None
        versions = await self._secret_versions(stable.spec)
        return stable.spec.instance_template(
            stable.pinned_image, versions, config_content=self._options.config_rollout
        )

    async def _target_template(self, record: DeploymentRecord) -> str:
        versions = await self._secret_versions(record.spec)
        return record.spec.instance_template(
            record.pinned_image, versions, config_content=self._options.config_rollout
        )

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
        image = await self._images.resolve(record)
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

    def _refresh(self) -> None:
        record = self._ctx.record
        if record is not None:
            self._update_snapshot(record, record.status)

    def _update_snapshot(self, record: DeploymentRecord, status: Status) -> None:
        ready = tuple(
            ReadyInstance(
                instance_name(i.deployment, i.slot),
                self._state.ready[i.container_id].ip,
                ports=i.ports,  # Swarm: the proxy dials the published ports
            )
            for i in sorted(self._ctx.instances, key=lambda i: (i.slot, i.revision))
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
