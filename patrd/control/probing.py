"""One deployment's startup and liveness checks: a task per running container."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from patrd.control.decisions import forgiven_slots
from patrd.control.probes import (
    TCP_POLL_S,
    Phase,
    http_probe,
    liveness_step,
    starting,
    startup_interval,
    startup_step,
    tcp_probe,
)
from patrd.control.worker_state import ReadyState, WorkerContext
from patrd.model.deployment import DeploymentRecord
from patrd.model.instances import ContainerState, Instance
from patrd.model.naming import instance_name
from patrd.model.spec import DeploymentSpec


class Probes:
    """Starts, cancels and runs the checks; the plan acts on what they find."""

    def __init__(
        self,
        ctx: WorkerContext,
        refresh: Callable[[], None],
        ready: Callable[[], None],
    ) -> None:
        self._ctx = ctx
        self._state = ctx.state
        self._refresh = refresh  # the pool changed: publish the routes again
        self._ready = ready  # an instance turned ready: look again (no container changed)

    def starting(self) -> bool:
        """A startup check is still running for some instance."""
        return any(p.phase is Phase.STARTING for p in self._state.probes.values())

    def track(self, record: DeploymentRecord, instances: list[Instance], now: float) -> None:
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
        ready_since = ((running[cid].slot, r.since) for cid, r in state.ready.items())
        for slot in forgiven_slots(ready_since, state.health, now):
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
            # Starting from now, not from when the task first runs: this pass
            # already says so (an adopted instance is re-checked, not "deploying").
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
            budget, interval = self._ctx.options.ready_timeout_s, TCP_POLL_S
        status = starting(time.monotonic())
        self._state.probes[cid] = status
        try:
            while status.phase is Phase.STARTING:
                if startup is not None:
                    # inst.reach: the published port on Swarm, the port itself on one node.
                    port = inst.reach(startup.port)
                    ok, detail = await http_probe(ip, port, startup.path, startup.timeout_s)
                else:
                    ok, detail = await tcp_probe(ip, inst.reach(spec.http_ports[0]))
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
                await self._ctx.store.add_event(
                    self._ctx.id, "startup_failed", f"instance {name}: {reason}", inst.revision
                )
                self._ctx.log.warning("startup_failed", instance=inst.container_name, reason=reason)
                return
            self._state.ready[cid] = ReadyState(ip, time.monotonic())
            self._state.hold_until = None  # held requests go to this instance now
            self._refresh()  # routed now, not a pass later
            self._ctx.log.info("instance_ready", instance=inst.container_name, address=ip)
            self._ready()
            liveness = spec.liveness_probe
            if liveness is None:
                return
            while True:
                await asyncio.sleep(liveness.period_s)
                port = inst.reach(liveness.port)  # see startup above
                ok, detail = await http_probe(ip, port, liveness.path, liveness.timeout_s)
                status = liveness_step(
                    status, ok, detail, time.monotonic(), liveness.failure_threshold
                )
                self._state.probes[cid] = status
                if status.phase is Phase.UNHEALTHY:
                    break
            # Out of the pool first, then the plan restarts it.
            self._state.ready.pop(cid, None)
            self._refresh()
            reason = (
                f"liveness probe {liveness.path} failed {status.liveness_failures} times "
                f"(last: {status.last_detail})"
            )
            self._state.unhealthy[cid] = reason
            await self._ctx.store.add_event(
                self._ctx.id, "unhealthy", f"instance {name}: {reason}", inst.revision
            )
            self._ctx.log.warning("instance_unhealthy", instance=inst.container_name, reason=reason)
        finally:
            self._state.probing.pop(cid, None)
            self._ctx.wake.set()
