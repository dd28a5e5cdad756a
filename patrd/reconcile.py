"""The planner: desired state + what the engine reports → a plan. Pure.

No awaits, no logging, no clock reads: ``now`` is an input. The executor
(``controller.py``) applies a plan and runs the next pass, which converges
further; every action carries the reason it exists.

Vocabulary:
    slot      instance index 0..n-1 of a deployment (``patrd.instance`` label)
    current   an instance of the deployment's current revision
    stale     an instance of an older revision (kept until its slot's
              replacement is ready, so a spec change never empties the pool)
    ready     a running instance that accepts connections (in the proxy pool)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from patrd.engine import ContainerState, Instance
from patrd.store import Intent, Status

CRASH_LIMIT = 5  # consecutive failed starts of one slot before the deployment is errored
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0


class ActionKind(StrEnum):
    CREATE = "create"
    START = "start"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    slot: int
    reason: str
    container_id: str = ""  # START and REMOVE


@dataclass(frozen=True, slots=True)
class SlotHealth:
    """Restart bookkeeping of one slot, kept by the executor."""

    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class Blocked:
    """The deployment cannot create instances until ``until`` (e.g. image pull failed)."""

    reason: str
    until: float


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    status: Status
    status_reason: str
    finished: bool = False  # DELETE intent and nothing left: drop network and row
    wake_at: float | None = None  # a backoff expires then: plan again

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {kind.value: 0 for kind in ActionKind}
        for action in self.actions:
            counts[action.kind.value] += 1
        return counts


@dataclass(frozen=True, slots=True)
class PlanInput:
    intent: Intent
    revision: int
    replicas: int
    instances: Sequence[Instance]
    ready: Collection[str]  # container ids
    health: Mapping[int, SlotHealth] = field(default_factory=dict)
    blocked: Blocked | None = None
    previous_status: Status = Status.DEPLOYING
    now: float = 0.0


def backoff_delay(failures: int) -> float:
    """Exponential restart delay: 1, 2, 4 … seconds, capped at five minutes."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1)))


def plan(inp: PlanInput) -> Plan:
    if inp.intent is not Intent.RUN:
        return _plan_down(inp)
    return _plan_run(inp)


def _plan_down(inp: PlanInput) -> Plan:
    actions = tuple(
        Action(ActionKind.REMOVE, i.slot, f"deployment {inp.intent.value}", i.container_id)
        for i in inp.instances
    )
    status = {
        Intent.STOP: Status.STOPPED,
        Intent.CREATED: Status.CREATED,
        Intent.DELETE: Status.DELETING,
    }[inp.intent]
    finished = inp.intent is Intent.DELETE and not inp.instances
    return Plan(actions=actions, status=status, status_reason="", finished=finished)


def _plan_run(inp: PlanInput) -> Plan:
    actions: list[Action] = []
    wake_at: list[float] = []
    current: dict[int, Instance] = {}
    stale: dict[int, list[Instance]] = {}

    for inst in sorted(inp.instances, key=_preference(inp.ready)):
        if inst.slot >= inp.replicas:
            actions.append(Action(ActionKind.REMOVE, inst.slot, "scale down", inst.container_id))
        elif inst.revision != inp.revision and inst.state is not ContainerState.RUNNING:
            actions.append(
                Action(ActionKind.REMOVE, inst.slot, "old revision, not running", inst.container_id)
            )
        elif inst.revision != inp.revision:
            stale.setdefault(inst.slot, []).append(inst)
        elif inst.slot in current:
            actions.append(
                Action(ActionKind.REMOVE, inst.slot, "duplicate instance", inst.container_id)
            )
        else:
            current[inst.slot] = inst

    ready_slots = 0
    for slot in range(inp.replicas):
        cur = current.get(slot)
        health = inp.health.get(slot, SlotHealth())
        if cur is not None and cur.container_id in inp.ready:
            ready_slots += 1
            for old in stale.pop(slot, []):
                actions.append(
                    Action(
                        ActionKind.REMOVE, slot, "replaced by a ready instance", old.container_id
                    )
                )
            continue
        if cur is not None and cur.state in (ContainerState.RUNNING, ContainerState.RESTARTING):
            continue  # starting; readiness is checked by the executor
        if cur is not None and cur.state in (ContainerState.PAUSED, ContainerState.REMOVING):
            continue
        due = health.retry_at <= inp.now
        if cur is None:
            if inp.blocked is not None and inp.blocked.until > inp.now:
                wake_at.append(inp.blocked.until)
            elif due:
                actions.append(Action(ActionKind.CREATE, slot, "missing instance"))
            else:
                wake_at.append(health.retry_at)
        elif cur.state is ContainerState.CREATED:
            actions.append(Action(ActionKind.START, slot, "created, not started", cur.container_id))
        elif due:
            reason = f"exited with code {cur.exit_code}" if cur.exit_code is not None else "exited"
            actions.append(Action(ActionKind.START, slot, reason, cur.container_id))
        else:
            wake_at.append(health.retry_at)

    # Stale instances of slots that no longer exist or whose slot has no
    # current instance at all keep serving; those of ready slots were removed above.
    status, reason = _status(inp, ready_slots, has_stale=bool(stale))
    return Plan(
        actions=tuple(actions),
        status=status,
        status_reason=reason,
        wake_at=min(wake_at) if wake_at else None,
    )


def _status(inp: PlanInput, ready_slots: int, *, has_stale: bool) -> tuple[Status, str]:
    crashed = [(slot, h) for slot, h in sorted(inp.health.items()) if h.failures >= CRASH_LIMIT]
    if inp.blocked is not None:
        return Status.ERRORED, inp.blocked.reason
    if crashed and ready_slots < inp.replicas:
        slot, health = crashed[0]
        return (
            Status.ERRORED,
            f"instance {slot} failed {health.failures} times: {health.last_error}",
        )
    if ready_slots == inp.replicas and not has_stale:
        return Status.RUNNING, ""
    if inp.previous_status is Status.RUNNING and ready_slots > 0 and not has_stale:
        return Status.RUNNING, f"{ready_slots}/{inp.replicas} instances ready"
    return Status.DEPLOYING, f"{ready_slots}/{inp.replicas} instances ready"


def _preference(ready: Collection[str]) -> Callable[[Instance], tuple[int, int, int, str]]:
    """Sort key: when a slot has duplicates, keep ready, then running, ones."""

    def key(inst: Instance) -> tuple[int, int, int, str]:
        return (
            inst.slot,
            0 if inst.container_id in ready else 1,
            0 if inst.state is ContainerState.RUNNING else 1,
            inst.container_id,
        )

    return key
