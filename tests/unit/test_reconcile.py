"""Planner tables: (desired, actual) → actions, plus safety properties."""

from __future__ import annotations

import itertools

import pytest

from patrd.control.reconcile import (
    CRASH_LIMIT,
    ActionKind,
    Blocked,
    PlanInput,
    SlotHealth,
    backoff_delay,
    plan,
)
from patrd.model.deployment import Intent, Status
from patrd.model.instances import ContainerState, Instance

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
        template=f"t{revision}",
    )


def pin(intent, revision, replicas, instances, **kw):
    """PlanInput with template ``t<revision>`` (instances of revision r carry ``t<r>``)."""
    return PlanInput(intent, f"t{revision}", replicas, instances, **kw)


def counts(p) -> tuple[int, int, int]:
    s = p.summary()
    return s["create"], s["start"], s["remove"]


@pytest.mark.parametrize(
    ("name", "inp", "expected", "status"),
    [
        (
            "fresh deployment creates every slot",
            pin(Intent.RUN, 1, 3, [], ready=()),
            (3, 0, 0),
            Status.DEPLOYING,
        ),
        (
            "all ready: nothing to do",
            pin(Intent.RUN, 1, 2, [inst("a", 0), inst("b", 1)], ready={"a", "b"}),
            (0, 0, 0),
            Status.RUNNING,
        ),
        (
            "running but not yet ready: wait",
            pin(Intent.RUN, 1, 1, [inst("a", 0)], ready=()),
            (0, 0, 0),
            Status.DEPLOYING,
        ),
        (
            "scale down removes the high slots",
            pin(
                Intent.RUN, 1, 1, [inst("a", 0), inst("b", 1), inst("c", 2)], ready={"a", "b", "c"}
            ),
            (0, 0, 2),
            Status.RUNNING,
        ),
        (
            "crashed instance is started again",
            pin(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), now=10),
            (0, 1, 0),
            Status.DEPLOYING,
        ),
        (
            "created but never started (daemon died in between)",
            pin(Intent.RUN, 1, 1, [inst("a", 0, state=CREATED)], ready=()),
            (0, 1, 0),
            Status.DEPLOYING,
        ),
        (
            "stale revision kept until its replacement is ready",
            pin(Intent.RUN, 2, 1, [inst("old", 0, 1)], ready={"old"}),
            (1, 0, 0),
            Status.DEPLOYING,
        ),
        (
            "stale revision removed once the replacement is ready",
            pin(Intent.RUN, 2, 1, [inst("old", 0, 1), inst("new", 0, 2)], ready={"old", "new"}),
            (0, 0, 1),
            Status.RUNNING,
        ),
        (
            "stale revision that is not running is removed at once",
            pin(Intent.RUN, 2, 1, [inst("old", 0, 1, EXITED)], ready=()),
            (1, 0, 1),
            Status.DEPLOYING,
        ),
        (
            "duplicate of a slot: the ready one stays",
            pin(Intent.RUN, 1, 1, [inst("b", 0), inst("a", 0)], ready={"b"}),
            (0, 0, 1),
            Status.RUNNING,
        ),
        (
            "stop removes everything",
            pin(Intent.STOP, 1, 2, [inst("a", 0), inst("b", 1)], ready={"a"}),
            (0, 0, 2),
            Status.STOPPED,
        ),
        (
            "created (deploy_on_create=false) runs nothing",
            pin(Intent.CREATED, 1, 2, [], ready=()),
            (0, 0, 0),
            Status.CREATED,
        ),
        (
            "delete removes everything",
            pin(Intent.DELETE, 1, 2, [inst("a", 0)], ready={"a"}),
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
    assert plan(pin(Intent.DELETE, 1, 1, [], ready=())).finished
    assert not plan(pin(Intent.DELETE, 1, 1, [inst("a", 0)], ready=())).finished


def test_backoff_holds_a_restart_until_due():
    health = {0: SlotHealth(failures=2, retry_at=100.0, last_error="exited with code 1")}
    early = plan(
        pin(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), health=health, now=50)
    )
    assert counts(early) == (0, 0, 0)
    assert early.wake_at == 100.0
    due = plan(
        pin(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), health=health, now=100)
    )
    assert counts(due) == (0, 1, 0)


def test_repeated_crashes_mark_errored_with_reason():
    health = {0: SlotHealth(failures=CRASH_LIMIT, retry_at=0, last_error="exited with code 3")}
    result = plan(
        pin(Intent.RUN, 1, 1, [inst("a", 0, state=EXITED)], ready=(), health=health, now=1)
    )
    assert result.status is Status.ERRORED
    assert "exited with code 3" in result.status_reason
    assert counts(result) == (0, 1, 0), "errored deployments keep retrying (capped backoff)"


def test_blocked_image_errors_and_waits():
    blocked = Blocked(reason="image x:1 unavailable", until=30.0)
    result = plan(pin(Intent.RUN, 1, 2, [], ready=(), blocked=blocked, now=10))
    assert result.status is Status.ERRORED
    assert result.status_reason == "image x:1 unavailable"
    assert counts(result) == (0, 0, 0)
    assert result.wake_at == 30.0


def test_running_stays_running_while_one_instance_restarts():
    result = plan(
        pin(
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
        result = plan(pin(Intent.RUN, 2, replicas, instances, ready=ready, now=1))
        removed = {a.container_id for a in result.actions if a.kind is ActionKind.REMOVE}
        creates = [a for a in result.actions if a.kind is ActionKind.CREATE]
        current_slots = {i.slot for i in instances if i.template == "t2" and i.slot < replicas}
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
                    and j.template == "t2"
                    and j.container_id in ready
                    and j.container_id not in removed
                ]
                assert keep, (instances, ready, result.actions)


# --- rollouts ------------------------------------------------------------------


def rollout(instances, ready, **kw):
    """Target template t2, stable (deployed) template t1, three replicas."""
    return plan(pin(Intent.RUN, 2, 3, instances, ready=ready, stable_template="t1", now=1, **kw))


OLD3 = [inst("o0", 0, 1), inst("o1", 1, 1), inst("o2", 2, 1)]
OLD_READY = {"o0", "o1", "o2"}


def test_rollout_starts_one_new_instance_at_a_time():
    first = rollout(OLD3, OLD_READY)
    assert [(a.kind, a.slot) for a in first.actions] == [(ActionKind.CREATE, 0)]
    assert first.status is Status.DEPLOYING and "rolling out" in first.status_reason

    starting = rollout([*OLD3, inst("n0", 0, 2)], OLD_READY)
    assert starting.actions == (), "surge 1: wait while the new instance starts"

    swapped = rollout([*OLD3, inst("n0", 0, 2)], OLD_READY | {"n0"})
    kinds = sorted((a.kind.value, a.container_id or str(a.slot)) for a in swapped.actions)
    assert kinds == [("create", "1"), ("remove", "o0")], "drain old 0, start new 1"


def test_rollout_converges_and_reports_it():
    done = rollout([inst("n0", 0, 2), inst("n1", 1, 2), inst("n2", 2, 2)], {"n0", "n1", "n2"})
    assert done.actions == () and done.converged and done.status is Status.RUNNING


def test_rollout_fails_when_a_new_instance_fails_its_startup():
    result = rollout(
        [*OLD3, inst("n0", 0, 2)], OLD_READY, failed={"n0": "startup probe did not pass"}
    )
    assert result.rollout_failed.startswith("instance 0: startup probe")
    assert not any(a.container_id in OLD_READY for a in result.actions), "old ones untouched"


def test_rollout_fails_when_a_new_instance_exits():
    result = rollout([*OLD3, inst("n0", 0, 2, EXITED)], OLD_READY)
    assert "exited" in result.rollout_failed


def test_after_a_failed_rollout_the_new_instances_go_and_the_old_stay():
    # the target went back to t1; n0 (t2) failed and is still running
    back = plan(
        pin(
            Intent.RUN,
            1,
            3,
            [*OLD3, inst("n0", 0, 2)],
            ready=OLD_READY,
            failed={"n0": "startup"},
            stable_template="t1",
            now=1,
        )
    )
    assert [(a.kind, a.container_id) for a in back.actions] == [(ActionKind.REMOVE, "n0")]
    assert back.status is Status.RUNNING


def test_first_deploy_failed_start_is_removed_and_counted():
    result = plan(pin(Intent.RUN, 1, 1, [inst("a", 0)], ready=(), failed={"a": "no answer"}))
    [action] = result.actions
    assert action.kind is ActionKind.REMOVE and action.failure and action.reason == "no answer"
    assert not result.rollout_failed


def test_unhealthy_instance_is_restarted_when_due():
    health = {0: SlotHealth(failures=1, retry_at=10.0)}
    base = {"ready": (), "unhealthy": {"a": "liveness failed"}, "health": health}
    early = plan(pin(Intent.RUN, 1, 1, [inst("a", 0)], now=5, **base))
    assert early.actions == () and early.wake_at == 10.0
    due = plan(pin(Intent.RUN, 1, 1, [inst("a", 0)], now=10, **base))
    [action] = due.actions
    assert action.kind is ActionKind.RESTART and action.failure


def test_same_template_new_revision_restarts_nothing():
    """A ports/probes/scale-only change keeps the template: no rollout."""
    result = plan(
        pin(Intent.RUN, 1, 2, [inst("a", 0), inst("b", 1)], ready={"a", "b"}, stable_template="t1")
    )
    assert result.actions == () and result.converged


def _rollout_worlds():
    """Every mix of old (t1) and new (t2) instances over 3 slots, states and readiness."""
    states = (RUNNING, EXITED)
    slots = range(3)
    per_slot = [
        (),
        ("old",),
        ("new",),
        ("old", "new"),
    ]
    for layout in itertools.product(per_slot, repeat=3):
        for st in itertools.product(states, repeat=sum(len(x) for x in layout)):
            instances = []
            k = 0
            for slot, kinds in zip(slots, layout, strict=True):
                for kind in kinds:
                    rev = 1 if kind == "old" else 2
                    instances.append(inst(f"{kind}{slot}", slot, rev, st[k]))
                    k += 1
            running = [i.container_id for i in instances if i.state is RUNNING]
            for mask in range(2 ** len(running)):
                ready = {c for b, c in enumerate(running) if mask >> b & 1}
                yield instances, ready


def test_rollout_never_drops_ready_capacity():
    """Removing old instances never leaves fewer slots served than before (capped at replicas),
    and at most SURGE new instances are starting at once while old ones serve."""
    for instances, ready in _rollout_worlds():
        result = rollout(instances, ready)
        if result.rollout_failed:
            continue
        removed = {a.container_id for a in result.actions if a.kind is ActionKind.REMOVE}
        slot_of = {i.container_id: i.slot for i in instances}
        before = {slot_of[c] for c in ready}
        after = {slot_of[c] for c in ready - removed}
        assert len(after) >= min(len(before), 3), (instances, ready, result.actions)
        old_serving = any(
            i.template == "t1" and i.container_id in ready - removed for i in instances
        )
        new_starting = [
            i
            for i in instances
            if i.template == "t2" and i.state is RUNNING and i.container_id not in ready
        ]
        creates = [a for a in result.actions if a.kind is ActionKind.CREATE]
        if old_serving:
            assert len(new_starting) + len(creates) <= max(1, len(new_starting)), (
                instances,
                ready,
                result.actions,
            )
