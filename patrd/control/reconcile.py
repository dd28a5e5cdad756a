"""The planner: desired state + what the engine reports → a plan. Pure.

No awaits, no logging, no clock reads: ``now`` is an input. The executor
(``controller.py``) applies a plan and runs the next pass, which converges
further; every action carries the reason it exists.

Vocabulary:
    slot      instance index 0..n-1 of a deployment (``patrd.instance`` label)
    template  digest of what a container is made of (image, env, resources,
              probes); a revision that changes only ports or scale keeps it
    current   an instance built from the target template
    stale     an instance of another template: it keeps serving until its
              slot's replacement is ready, then it is drained and removed
    ready     passed its startup check and is in the proxy pool
    rollout   replacing the instances of the last deployed (stable) template
              by the target's, one new instance at a time (surge 1)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from patrd.kit.backoff import Backoff
from patrd.model.deployment import Intent, Status
from patrd.model.instances import ContainerState, Instance

# Consecutive failed starts of one slot before the deployment is errored (a crash
# loop): with the 1, 2, 4 s backoff that is seconds, not a minute of "deploying".
CRASH_LIMIT = 3
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
SURGE = 1  # new instances starting at once while old ones still serve
STOP_FIRST = "stop-first (volume)"  # reason of a removal that makes room for its replacement

_GONE = (ContainerState.EXITED, ContainerState.DEAD)


class ActionKind(StrEnum):
    CREATE = "create"
    START = "start"
    RESTART = "restart"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    slot: int
    reason: str
    container_id: str = ""  # all but CREATE
    failure: bool = False  # counts as a failed start of its slot (backoff)


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
    converged: bool = False  # every slot ready on the target template, nothing stale
    rollout_failed: str = ""  # a new instance failed while the stable template serves
    # Slot → the node it waits for (Instance.waiting_for), for slots not ready.
    waiting: Mapping[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {kind.value: 0 for kind in ActionKind}
        for action in self.actions:
            counts[action.kind.value] += 1
        return counts


@dataclass(frozen=True, slots=True)
class PlanInput:
    intent: Intent
    template: str
    replicas: int
    instances: Sequence[Instance]
    ready: Collection[str]  # container ids
    failed: Mapping[str, str] = field(default_factory=dict)  # startup failed: id → why
    unhealthy: Mapping[str, str] = field(default_factory=dict)  # liveness failed: id → why
    health: Mapping[int, SlotHealth] = field(default_factory=dict)
    blocked: Blocked | None = None
    stable_template: str | None = None  # None: never deployed yet
    stop_first: bool = False  # volumes: an old instance stops before its slot's new one starts
    previous_status: Status = Status.DEPLOYING
    now: float = 0.0

    @property
    def in_rollout(self) -> bool:
        return self.stable_template is not None and self.stable_template != self.template


RESTART_BACKOFF = Backoff(initial_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)


def backoff_delay(failures: int) -> float:
    """Exponential restart delay: 1, 2, 4 … seconds, capped at five minutes."""
    return RESTART_BACKOFF.delay(failures)


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
        cid = inst.container_id
        if inst.template != inp.template:
            if inst.state is not ContainerState.RUNNING or cid in inp.failed:
                why = "failed to start" if cid in inp.failed else "not running"
                actions.append(Action(ActionKind.REMOVE, inst.slot, f"old template, {why}", cid))
            else:
                stale.setdefault(inst.slot, []).append(inst)
        elif inst.slot >= inp.replicas:
            actions.append(Action(ActionKind.REMOVE, inst.slot, "scale down", cid))
        elif inst.slot in current:
            actions.append(Action(ActionKind.REMOVE, inst.slot, "duplicate instance", cid))
        else:
            current[inst.slot] = inst

    if inp.in_rollout:
        failure = _rollout_failure(current.values(), inp.failed)
        if failure:
            return Plan(
                actions=tuple(a for a in actions if a.container_id not in _ids(current)),
                status=Status.DEPLOYING,
                status_reason=failure,
                rollout_failed=failure,
            )

    ready_slots = 0
    starting = 0
    missing: list[int] = []
    for slot in range(inp.replicas):
        cur = current.get(slot)
        health = inp.health.get(slot, SlotHealth())
        due = health.retry_at <= inp.now
        if cur is None:
            missing.append(slot)
            continue
        cid = cur.container_id
        if cid in inp.ready:
            ready_slots += 1
            for old in stale.pop(slot, []):
                actions.append(
                    Action(
                        ActionKind.REMOVE, slot, "replaced by a ready instance", old.container_id
                    )
                )
        elif cid in inp.unhealthy:
            if due:
                actions.append(
                    Action(ActionKind.RESTART, slot, inp.unhealthy[cid], cid, failure=True)
                )
            else:
                wake_at.append(health.retry_at)
        elif cid in inp.failed:
            actions.append(Action(ActionKind.REMOVE, slot, inp.failed[cid], cid, failure=True))
        elif cur.state is ContainerState.CREATED:
            starting += 1
            actions.append(Action(ActionKind.START, slot, "created, not started", cid))
        elif cur.state in _GONE:
            if due:
                why = f"exited with code {cur.exit_code}" if cur.exit_code is not None else "exited"
                actions.append(Action(ActionKind.START, slot, why, cid, failure=True))
            else:
                wake_at.append(health.retry_at)
        else:
            starting += 1  # running (or paused/restarting): its startup check decides

    if ready_slots == inp.replicas:
        # Stale instances of slots above the new count served until now.
        for olds in stale.values():
            for old in olds:
                actions.append(
                    Action(ActionKind.REMOVE, old.slot, "rollout done", old.container_id)
                )
        stale.clear()
    rolling = bool(stale)
    budget = max(0, SURGE - starting) if rolling else len(missing)
    for slot in missing:
        health = inp.health.get(slot, SlotHealth())
        if inp.stop_first and slot in stale:
            # The volume cannot be shared: stop the old instance of this slot
            # first (one slot at a time); the others keep serving.
            if budget > 0:
                budget -= 1
                for old in stale[slot]:
                    actions.append(Action(ActionKind.REMOVE, slot, STOP_FIRST, old.container_id))
            continue
        if inp.blocked is not None and inp.blocked.until > inp.now:
            wake_at.append(inp.blocked.until)
        elif health.retry_at > inp.now:
            wake_at.append(health.retry_at)
        elif budget > 0:
            budget -= 1
            reason = "rolling out" if rolling else "missing instance"
            actions.append(Action(ActionKind.CREATE, slot, reason))

    status, reason = _status(inp, ready_slots, rolling=rolling)
    waits = {
        slot: inst.waiting_for
        for slot, inst in sorted(current.items())
        if inst.waiting_for and inst.container_id not in inp.ready and slot < inp.replicas
    }
    if waits and status is not Status.ERRORED:
        reason = f"{reason}; {waiting_reason(waits)}" if reason else waiting_reason(waits)
    converged = ready_slots == inp.replicas and not stale and not actions
    return Plan(
        actions=tuple(actions),
        status=status,
        status_reason=reason,
        wake_at=min(wake_at) if wake_at else None,
        converged=converged,
        waiting=waits,
    )


def waiting_reason(waits: Mapping[int, str]) -> str:
    """Slot → node it waits for (``Instance.waiting_for``), in words, one clause per node."""
    by_node: dict[str, list[int]] = {}
    for slot, node in sorted(waits.items()):
        by_node.setdefault(node, []).append(slot)
    clauses = []
    for node, slots in by_node.items():
        if len(slots) == 1:
            who, their = f"instance {slots[0]} is", "its"
        else:
            who, their = f"instances {', '.join(map(str, slots))} are", "their"
        clauses.append(f"{who} waiting for node {node} that holds {their} volume data")
    return "; ".join(clauses)


def _rollout_failure(current: Collection[Instance], failed: Mapping[str, str]) -> str:
    for inst in sorted(current, key=lambda i: i.slot):
        if inst.container_id in failed:
            return f"instance {inst.slot}: {failed[inst.container_id]}"
        if inst.state in _GONE:
            code = f" with code {inst.exit_code}" if inst.exit_code is not None else ""
            return f"instance {inst.slot} exited{code} before it was ready"
    return ""


def _ids(instances: Mapping[int, Instance]) -> set[str]:
    return {i.container_id for i in instances.values()}


def _status(inp: PlanInput, ready_slots: int, *, rolling: bool) -> tuple[Status, str]:
    crashed = [(slot, h) for slot, h in sorted(inp.health.items()) if h.failures >= CRASH_LIMIT]
    if inp.blocked is not None:
        return Status.ERRORED, inp.blocked.reason
    if crashed and ready_slots < inp.replicas and not rolling:
        slot, health = crashed[0]
        return (
            Status.ERRORED,
            f"crash loop: instance {slot} failed to start {health.failures} times "
            f"(last: {health.last_error}); retrying with backoff",
        )
    if ready_slots == inp.replicas and not rolling:
        return Status.RUNNING, ""
    if inp.previous_status is Status.RUNNING and ready_slots > 0 and not rolling:
        return Status.RUNNING, f"{ready_slots}/{inp.replicas} instances ready"
    if rolling:
        return Status.DEPLOYING, f"rolling out: {ready_slots}/{inp.replicas} new instances ready"
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
