"""Applying a plan to one deployment: create, start, restart and remove instances.

Creates go first, so a replacement starts while the old instance drains; a
failed start is counted against its slot (crash loop, backoff) only when it
is the app's fault (start_faults.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from patrd.control.decisions import failure_note, scale_down_removes_volumes, slot_volumes
from patrd.control.images import ImageResolver
from patrd.control.instances import InstanceStartError, instance_spec, resolve_env
from patrd.control.reconcile import STOP_FIRST, Action, ActionKind
from patrd.control.start_faults import StartFault, StartRepair, classify_start_error, start_repair
from patrd.control.worker_state import WorkerContext
from patrd.engine.config_mounts import sync_config_dir
from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.errors import EngineError, ImageNotFound
from patrd.model.naming import (
    container_name,
    instance_name,
    legacy_volume_name,
    network_name,
    volume_name,
)
from patrd.model.replicas import effective_replicas


class Steps:
    def __init__(
        self,
        ctx: WorkerContext,
        images: ImageResolver,
        update_snapshot: Callable[[DeploymentRecord, Status], None],
    ) -> None:
        self._ctx = ctx
        self._state = ctx.state
        self._engine = ctx.engine
        self._options = ctx.options
        self._log = ctx.log
        self._images = images
        self._update_snapshot = update_snapshot

    async def apply(self, record: DeploymentRecord, actions: tuple[Action, ...]) -> None:
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
            image = await self._images.resolve(record)
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

    def _count_failure(self, action: Action) -> str:
        health = self._state.count_failure(action.slot, action.reason, time.monotonic())
        return failure_note(health)

    async def _remove(self, record: DeploymentRecord, action: Action) -> None:
        inst = self._ctx.instance(action.container_id)
        if inst is not None and inst.ip is not None:
            # inst.reach: the proxy's pools are keyed by the port it dials.
            await self._drain(inst.ip, tuple(inst.reach(p) for p in record.spec.http_ports))
        self._log.info(
            "remove",
            deployment=record.name,
            container=action.container_id[:12],
            reason=action.reason,
        )
        if action.failure:
            note = self._count_failure(action)
            await self._ctx.store.add_event(
                self._ctx.id,
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
        self._state.forget(action.container_id)
        if record.spec.volumes and scale_down_removes_volumes(
            action.slot,
            effective_replicas(record),
            running=record.intent is Intent.RUN,
            slot_still_used=any(
                i.slot == action.slot and i.container_id != action.container_id
                for i in self._ctx.instances
            ),
        ):
            found = await self._engine.list_volumes(record.name)
            for name in slot_volumes(
                ((v.name, v.volume, v.slot) for v in found),
                declared={v.name for v in record.spec.volumes},
                slot=action.slot,
            ):
                await self._engine.remove_volume(name)

    async def _drain(self, ip: str, ports: tuple[int, ...]) -> None:
        """Out of the pool already; wait (bounded) for in-flight requests to finish."""
        if self._ctx.flush_routes is not None:
            self._ctx.flush_routes()  # the table without it reaches the proxy before we count
        deadline = time.monotonic() + self._options.drain_timeout_s
        while time.monotonic() < deadline:
            if all(self._ctx.sink.outstanding(ip, port) == 0 for port in ports):
                return
            await asyncio.sleep(0.05)

    async def _start(self, record: DeploymentRecord, action: Action) -> None:
        cid = action.container_id
        before = self._state.health.get(action.slot)
        if action.failure:
            note = self._count_failure(action)
            await self._ctx.event(
                "restart",
                f"instance {instance_name(record.name, action.slot)} {action.reason}; "
                f"restarting ({note})",
                record.revision,
            )
        # Not InstanceStartError: a fresh container that cannot start is
        # reported at once by _create; this one started before.
        try:
            await self._engine.start(cid)
        except EngineError as exc:
            fault = classify_start_error(str(exc))
            stale = self._state.stale_starts
            stale[cid] = stale.get(cid, 0) + 1 if fault is StartFault.ENGINE_STALE else 0
            repair = start_repair(fault, stale[cid])
            if repair is not StartRepair.COUNT:
                # The engine's fault: the exit was counted once, not once per try.
                self._state.restore_health(action.slot, before)
            if repair is StartRepair.REPLACE:
                await self._replace_stale(record, action, str(exc))
                return
            raise
        self._state.stale_starts.pop(cid, None)

    async def _replace_stale(self, record: DeploymentRecord, action: Action, error: str) -> None:
        """Docker kept stale state of this container (a containerd task, a network
        endpoint) and refuses to start it again: a new container replaces it."""
        cid = action.container_id
        name = instance_name(record.name, action.slot)
        self._log.warning("replace_stale", deployment=record.name, container=cid[:12], error=error)
        await self._ctx.event(
            "engine_stale",
            f"instance {name}: Docker kept stale state of its container ({error}); "
            "replacing the container",
            record.revision,
        )
        inst = self._ctx.instance(cid)
        keep_logs = self._options.on_remove
        if keep_logs is not None and inst is not None:
            await keep_logs(inst)
        self._state.removed.add(cid)
        self._state.stale_starts.pop(cid, None)
        await self._engine.remove(cid, self._options.stop_timeout_s)
        self._state.forget(cid)

    async def _restart(self, record: DeploymentRecord, action: Action) -> None:
        note = self._count_failure(action)
        await self._ctx.event(
            "restart",
            f"instance {instance_name(record.name, action.slot)} unhealthy; restarting ({note})",
            record.revision,
        )
        inst = self._ctx.instance(action.container_id)
        if inst is not None and inst.ip is not None:
            # inst.reach: the proxy's pools are keyed by the port it dials.
            await self._drain(inst.ip, tuple(inst.reach(p) for p in record.spec.http_ports))
        self._state.forget(action.container_id)
        await self._engine.restart(action.container_id, self._options.stop_timeout_s)
        self._state.forget(action.container_id)

    async def _create(self, record: DeploymentRecord, image: str, action: Action) -> None:
        spec = record.spec
        name = container_name(record.name, record.revision, action.slot)
        self._log.info("create", deployment=record.name, container=name, reason=action.reason)
        user_env = await resolve_env(spec, self._ctx.vault)
        wanted = instance_spec(
            record,
            self._options,
            slot=action.slot,
            template=self._ctx.template,
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
            engine_fault = classify_start_error(str(exc)) is not StartFault.APP
            if isinstance(exc, ImageNotFound) or engine_fault:
                raise  # not the deployment's fault: the pass retries
            raise InstanceStartError(f"instance {wanted.hostname} could not start: {exc}") from exc

    async def _ensure_network(self, record: DeploymentRecord) -> None:
        if not self._state.network_ok:
            await self._engine.ensure_network(network_name(record.name), record.name, record.id)
            self._state.network_ok = True
