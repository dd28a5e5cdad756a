"""Volume instances waiting for their node: the Swarm backend names the node,
the planner says so in the status reason, the worker tells it once (events)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from patrd.control.decisions import waits_to_announce
from patrd.control.reconcile import PlanInput, plan, waiting_reason
from patrd.engine.labels import (
    LABEL_DEPLOYMENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE,
    LABEL_REVISION,
)
from patrd.engine.swarm_backend import as_instance, nodes_out, waiting_for
from patrd.engine.swarm_tasks import SwarmInstance, pinned_node, swarm_instance_from
from patrd.model.deployment import Intent, Status
from patrd.model.instances import ContainerState, Instance

HOME = "o5dd1c4n3mpxabcdefghij"  # a swarm node ID (25 characters in real life)


def node(node_id: str, availability: str = "active", state: str = "ready") -> dict[str, Any]:
    return {
        "ID": node_id,
        "Spec": {"Availability": availability},
        "Status": {"State": state},
        "Description": {"Hostname": f"host-{node_id[:2]}"},
    }


def service(constraints: list[str] | None) -> dict[str, Any]:
    template: dict[str, Any] = {"ContainerSpec": {}}
    if constraints is not None:
        template["Placement"] = {"Constraints": constraints}
    labels = {
        LABEL_REVISION: "1",
        LABEL_INSTANCE: "0",
        LABEL_DEPLOYMENT_ID: "dep",
        LABEL_DEPLOYMENT: "vol",
    }
    spec = {"Name": "patrd-vol-0", "Labels": labels, "TaskTemplate": template}
    return {"ID": "svc1", "Spec": spec}


def test_the_pinned_node_is_read_from_the_placement_constraint() -> None:
    assert pinned_node(service([f"node.id=={HOME}"])) == HOME
    assert pinned_node(service(["node.role==worker", f"node.id == {HOME}"])) == HOME
    assert pinned_node(service(["node.role==worker"])) == ""
    assert pinned_node(service(None)) == ""


def pending_task() -> SwarmInstance:
    """Swarm's task of a pinned slot while its node is out: Pending, on no node."""
    task = {"ID": "t2", "NodeID": "", "DesiredState": "running", "Status": {"State": "pending"}}
    found = swarm_instance_from(service([f"node.id=={HOME}"]), task, {})
    assert found is not None
    return found


def test_a_slot_pinned_to_a_node_out_of_service_waits_for_it_by_name() -> None:
    task = pending_task()
    assert task.pinned == HOME
    for home in (
        node(HOME, availability="drain"),
        node(HOME, availability="pause"),
        node(HOME, state="down"),
    ):
        nodes = {HOME: home, "other": node("other")}
        inst = as_instance(task, nodes_out(nodes.values(), ()), nodes)
        assert inst.waiting_for == f"host-o5 ({HOME[:12]})"
        assert inst.state is ContainerState.RESTARTING and inst.ip is None


def test_unreachable_or_gone_homes_are_waited_for_too() -> None:
    nodes = {HOME: node(HOME)}
    assert waiting_for(HOME, out={HOME}, nodes=nodes) == f"host-o5 ({HOME[:12]})"  # knock failed
    assert waiting_for(HOME, out=set(), nodes={}) == HOME[:12]  # no longer in the swarm


def test_no_wait_when_the_home_serves_or_the_slot_is_not_pinned() -> None:
    nodes = {HOME: node(HOME)}
    assert waiting_for(HOME, out=set(), nodes=nodes) == ""
    assert waiting_for("", out={HOME}, nodes=nodes) == ""
    assert as_instance(pending_task(), set(), nodes).waiting_for == ""
    assert as_instance(pending_task(), {HOME}).waiting_for == ""  # no node list: not known


def instance(cid: str, slot: int, waiting: str = "") -> Instance:
    return Instance(
        container_id=cid,
        container_name=f"patrd-vol-r1-{slot}",
        deployment_id="d1",
        deployment="vol",
        revision=1,
        slot=slot,
        state=ContainerState.RUNNING if not waiting else ContainerState.RESTARTING,
        ip="10.0.0.2" if not waiting else None,
        exit_code=None,
        template="t1",
        waiting_for=waiting,
    )


def run(instances: list[Instance], ready: set[str], replicas: int = 2) -> PlanInput:
    return PlanInput(
        Intent.RUN,
        "t1",
        replicas,
        instances,
        ready=ready,
        stable_template="t1",
        stop_first=True,
        previous_status=Status.RUNNING,
    )


def test_the_status_reason_names_the_node_a_slot_waits_for() -> None:
    result = plan(run([instance("a", 0, "box (o5dd1c4n3mpx)"), instance("b", 1)], {"b"}))
    assert result.status is Status.RUNNING
    assert result.status_reason == (
        "1/2 instances ready; instance 0 is waiting for node box (o5dd1c4n3mpx) "
        "that holds its volume data"
    )
    assert result.waiting == {0: "box (o5dd1c4n3mpx)"}
    assert result.actions == ()  # nothing to do but wait: no create elsewhere


def test_no_wait_once_ready_or_scaled_away() -> None:
    ready_again = plan(run([instance("a", 0, "box (x)"), instance("b", 1)], {"a", "b"}))
    assert (ready_again.status_reason, ready_again.waiting) == ("", {})
    scaled = plan(run([instance("a", 2, "box (x)"), instance("b", 0)], {"b"}, replicas=1))
    assert scaled.waiting == {}


def test_waiting_reason_groups_slots_by_node() -> None:
    assert waiting_reason({2: "a (1)", 0: "a (1)", 1: "b (2)"}) == (
        "instances 0, 2 are waiting for node a (1) that holds their volume data; "
        "instance 1 is waiting for node b (2) that holds its volume data"
    )


def test_a_wait_is_announced_once_and_again_after_it_ended() -> None:
    told: dict[int, str] = {}
    passes = [{0: "a"}, {0: "a"}, {0: "a", 1: "a"}, {0: "b", 1: "a"}, {}, {0: "a"}]
    announced = []
    for waiting in passes:
        announced.append(waits_to_announce(told, waiting))
        told = dict(waiting)
    assert announced == [{0: "a"}, {}, {1: "a"}, {0: "b"}, {}, {0: "a"}]


def test_instances_carry_no_wait_by_default() -> None:
    assert replace(instance("a", 0)).waiting_for == ""
