"""Planner tables: (desired, actual) → actions, plus safety properties."""

from __future__ import annotations

import itertools

import pytest

from patrd.engine import ContainerState, Instance
from patrd.reconcile import (
    CRASH_LIMIT,
    ActionKind,
    Blocked,
    PlanInput,
    SlotHealth,
    backoff_delay,
    plan,
)
from patrd.store import Intent, Status

RUNNING = ContainerState.RUNNING
EXITED = ContainerState.EXITED
CREATED = ContainerState.CREATED


def inst(cid: str, slot: int, revision: int = 1, state: ContainerState = RUNNING) -> Instance:
    return Instance(
        container_id=cid,
        container_name=f"patrd-web-r{revision}-{slot}",
        deployment_id="d1",
        deployment="web",
        revision=revision,
        slot=slot,
        state=state,
        ip="172.18.0.2" if state is RUNNING else None,
        exit_code=1 if state is EXITED else None,
    )


def counts(p) -> tuple[int, int, int]:
    s = p.summary()
    return s["create"], s["start"], s["remove"]


@pytest.mark.parametrize(
    ("name", "inp", "expected", "status"),
    [
        (
            "fresh deployment creates every slot",
            PlanInput(Intent.RUN, 1, 3, [], ready=()),
            (3, 0, 0),
            Status.DEPLOYING,
        ),
        (
            "all ready: nothing to do",
            PlanInput(Intent.RUN, 1, 2, [inst("a", 0), inst("b", 1)], ready={"a", "b"}),
            (0, 0, 0),
            Status.RUNNING,
        ),
        (
            "running but not yet ready: wait",
            PlanInput(Intent.RUN, 1, 1, [inst("a", 0)], ready=()),
            (0, 0, 0),
            Status.DEPLOYING,
        ),
        (
            "scale down removes the high slots",
            PlanInput(
                Intent.RUN, 1, 1, [inst("a", 0), inst("b", 1), inst("c", 2)], ready={"a", "b", "c"}
            ),
            (0, 0, 2),
            Status.RUNNING,
        ),
        (
            "crashed instance is started again",
            PlanInput(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), now=10),
            (0, 1, 0),
            Status.DEPLOYING,
        ),
        (
            "created but never started (daemon died in between)",
            PlanInput(Intent.RUN, 1, 1, [inst("a", 0, state=CREATED)], ready=()),
            (0, 1, 0),
            Status.DEPLOYING,
        ),
        (
            "stale revision kept until its replacement is ready",
            PlanInput(Intent.RUN, 2, 1, [inst("old", 0, 1)], ready={"old"}),
            (1, 0, 0),
            Status.DEPLOYING,
        ),
        (
            "stale revision removed once the replacement is ready",
            PlanInput(
                Intent.RUN, 2, 1, [inst("old", 0, 1), inst("new", 0, 2)], ready={"old", "new"}
            ),
            (0, 0, 1),
            Status.RUNNING,
        ),
        (
            "stale revision that is not running is removed at once",
            PlanInput(Intent.RUN, 2, 1, [inst("old", 0, 1, EXITED)], ready=()),
            (1, 0, 1),
            Status.DEPLOYING,
        ),
        (
            "duplicate of a slot: the ready one stays",
            PlanInput(Intent.RUN, 1, 1, [inst("b", 0), inst("a", 0)], ready={"b"}),
            (0, 0, 1),
            Status.RUNNING,
        ),
        (
            "stop removes everything",
            PlanInput(Intent.STOP, 1, 2, [inst("a", 0), inst("b", 1)], ready={"a"}),
            (0, 0, 2),
            Status.STOPPED,
        ),
        (
            "created (deploy_on_create=false) runs nothing",
            PlanInput(Intent.CREATED, 1, 2, [], ready=()),
            (0, 0, 0),
            Status.CREATED,
        ),
        (
            "delete removes everything",
            PlanInput(Intent.DELETE, 1, 2, [inst("a", 0)], ready={"a"}),
            (0, 0, 1),
            Status.DELETING,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_plan_table(name, inp, expected, status):
    result = plan(inp)
    assert counts(result) == expected, name
    assert result.status is status
    assert all(a.reason for a in result.actions)


def test_delete_finishes_when_nothing_is_left():
    assert plan(PlanInput(Intent.DELETE, 1, 1, [], ready=())).finished
    assert not plan(PlanInput(Intent.DELETE, 1, 1, [inst("a", 0)], ready=())).finished


def test_backoff_holds_a_restart_until_due():
    health = {0: SlotHealth(failures=2, retry_at=100.0, last_error="exited with code 1")}
    early = plan(
        PlanInput(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), health=health, now=50)
    )
    assert counts(early) == (0, 0, 0)
    assert early.wake_at == 100.0
    due = plan(
        PlanInput(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), health=health, now=100)
    )
    assert counts(due) == (0, 1, 0)


def test_repeated_crashes_mark_errored_with_reason():
    health = {0: SlotHealth(failures=CRASH_LIMIT, retry_at=0, last_error="exited with code 3")}
    result = plan(
        PlanInput(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), health=health, now=1)
    )
    assert result.status is Status.ERRORED
    assert "exited with code 3" in result.status_reason
    assert counts(result) == (0, 1, 0), "errored deployments keep retrying (capped backoff)"


def test_blocked_image_errors_and_waits():
    blocked = Blocked(reason="image x:1 unavailable", until=30.0)
    result = plan(PlanInput(Intent.RUN, 1, 2, [], ready=(), blocked=blocked, now=10))
    assert result.status is Status.ERRORED
    assert result.status_reason == "image x:1 unavailable"
    assert counts(result) == (0, 0, 0)
    assert result.wake_at == 30.0


def test_running_stays_running_while_one_instance_restarts():
    result = plan(
        PlanInput(
            Intent.RUN,
            1,
            2,
            [inst("a", 0), inst("b", 1, state=EXITED)],
            ready={"a"},
            previous_status=Status.RUNNING,
            now=5,
        )
    )
    assert result.status is Status.RUNNING
    assert result.status_reason == "1/2 instances ready"


@pytest.mark.parametrize("failures", [0, 1, 2, 5, 9, 20, 100])
def test_backoff_grows_and_is_capped(failures):
    assert backoff_delay(failures) <= 300.0
    if failures >= 1:
        assert backoff_delay(failures + 1) >= backoff_delay(failures)


def _all_worlds():
    """Small exhaustive worlds: up to 3 instances over 2 revisions, 3 slots, 3 states."""
    states = (RUNNING, EXITED, CREATED)
    specs = [(slot, rev, st) for slot in range(3) for rev in (1, 2) for st in states]
    for n in range(4):
        for combo in itertools.combinations(specs, n):
            instances = [inst(f"c{i}", s, r, st) for i, (s, r, st) in enumerate(combo)]
            running = [i.container_id for i in instances if i.state is RUNNING]
            for k in range(len(running) + 1):
                for ready in itertools.combinations(running, k):
                    yield instances, set(ready)


@pytest.mark.parametrize("replicas", [1, 2])
def test_safety_properties(replicas):
    """Never exceed the count; never remove the last ready instance of a slot early."""
    for instances, ready in _all_worlds():
        result = plan(PlanInput(Intent.RUN, 2, replicas, instances, ready=ready, now=1))
        removed = {a.container_id for a in result.actions if a.kind is ActionKind.REMOVE}
        creates = [a for a in result.actions if a.kind is ActionKind.CREATE]
        current_slots = {i.slot for i in instances if i.revision == 2 and i.slot < replicas}
        # never place more than the count, never two for a slot
        assert all(a.slot < replicas for a in creates)
        assert not {a.slot for a in creates} & current_slots
        assert len({a.slot for a in creates}) == len(creates)
        # a ready instance of an in-range slot is removed only when a ready
        # current-revision instance of that slot stays
        for i in instances:
            if i.container_id in removed and i.container_id in ready and i.slot < replicas:
                keep = [
                    j
                    for j in instances
                    if j.slot == i.slot
                    and j.revision == 2
                    and j.container_id in ready
                    and j.container_id not in removed
                ]
                assert keep, (instances, ready, result.actions)
