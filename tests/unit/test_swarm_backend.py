"""engine.backend (settings), the Swarm backend's pure parts, and per-instance ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patrd.control.route_table import DeploymentSnapshot, ReadyInstance, build_routes
from patrd.engine.swarm_backend import as_instance, changes, nodes_out, service_of
from patrd.engine.swarm_tasks import SwarmInstance
from patrd.model.deployment import Status
from patrd.model.errors import ConfigError
from patrd.model.instances import ContainerState, Instance
from patrd.settings.config import parse


def test_engine_backend_defaults_to_docker_and_accepts_swarm(tmp_path: Path) -> None:
    assert parse({}, base_dir=tmp_path).engine.backend == "docker"
    assert not parse({}, base_dir=tmp_path).engine.swarm
    config = parse({"engine": {"backend": "swarm"}}, base_dir=tmp_path)
    assert config.engine.swarm


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"engine": {"backend": "k8s"}}, "engine.backend"),
        ({"engine": {"backend": 1}}, "engine.backend"),
        ({"engine": {"mode": "swarm"}}, "engine.mode"),
        ({"engine": "swarm"}, "engine"),
    ],
)
def test_engine_backend_refuses_bad_values(
    tmp_path: Path, raw: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(raw, base_dir=tmp_path)
    assert info.value.key == field


def instance(**overrides: object) -> Instance:
    fields: dict[str, object] = {
        "container_id": "svc1",
        "container_name": "web-0",
        "deployment_id": "dep",
        "deployment": "web",
        "revision": 1,
        "slot": 0,
        "state": ContainerState.RUNNING,
        "ip": "10.250.1.12",
        "exit_code": None,
    }
    fields.update(overrides)
    return Instance(**fields)  # type: ignore[arg-type]


def task(
    node: str = "n2", task_id: str = "t1", ports: dict[int, int] | None = None
) -> SwarmInstance:
    return SwarmInstance(
        instance=instance(),
        service_id="svc1",
        task_id=task_id,
        node_id=node,
        node_address="10.250.1.12",
        port=30001,
        ports=ports if ports is not None else {80: 30001, 8080: 30002},
        task_state="running",
        desired_state="running",
        error="",
    )


def test_instance_reach_maps_published_ports_and_defaults_to_the_port_itself() -> None:
    assert instance().reach(80) == 80  # one node: the container's own port
    inst = as_instance(task(), out=set())
    assert inst.container_id == "svc1.t1"
    assert (inst.reach(80), inst.reach(8080), inst.reach(9000)) == (30001, 30002, 9000)
    assert service_of(inst.container_id) == "svc1"
    assert service_of("svc1") == "svc1"
    # No task yet: the service stands for the slot.
    assert as_instance(task(task_id=""), out=set()).container_id == "svc1"


def test_tasks_on_nodes_out_of_service_are_running_without_an_address() -> None:
    withheld = as_instance(task(node="n2"), out={"n2"})
    assert withheld.state is ContainerState.RUNNING
    assert (withheld.ip, withheld.ports) == (None, ())


def test_nodes_out_are_leaving_drained_paused_or_not_ready() -> None:
    raw = [
        {"ID": "a", "Spec": {"Availability": "active"}, "Status": {"State": "ready"}},
        {"ID": "b", "Spec": {"Availability": "drain"}, "Status": {"State": "ready"}},
        {"ID": "c", "Spec": {"Availability": "pause"}, "Status": {"State": "ready"}},
        {"ID": "d", "Spec": {"Availability": "active"}, "Status": {"State": "down"}},
        {"ID": "e", "Spec": {"Availability": "active"}, "Status": {"State": "ready"}},
    ]
    assert nodes_out(raw, leaving={"e"}) == {"b", "c", "d", "e"}


def test_changes_report_new_changed_and_gone_instances() -> None:
    before = {"s.1": ("dep", "running", "10.0.0.1"), "s.2": ("dep", "running", "10.0.0.2")}
    now = {
        "s.1": ("dep", "running", "10.0.0.1"),
        "s.2": ("dep", "running", None),
        "s.3": ("dep", "created", None),
    }
    assert sorted(changes(before, now)) == [("dep", "s.2", "running"), ("dep", "s.3", "created")]
    assert changes(now, {}) == [("dep", c, "destroy") for c in now]
    assert changes(now, now) == []


def test_routes_dial_the_published_port_of_each_ready_instance() -> None:
    snap = DeploymentSnapshot(
        name="web",
        status=Status.RUNNING,
        ports=(80,),
        ready=(
            ReadyInstance("web-0", "10.250.1.11", ports=((80, 30001),)),
            ReadyInstance("web-1", "10.250.1.12", ports=((80, 30007),)),
            ReadyInstance("web-2", "172.18.0.5"),  # one node: the container's port
        ),
    )
    (route,) = build_routes([snap], "test.localhost").routes
    assert [(b.host, b.port) for b in route.backends] == [
        ("10.250.1.11", 30001),
        ("10.250.1.12", 30007),
        ("172.18.0.5", 80),
    ]


async def test_knock_tells_an_open_port_from_a_closed_one() -> None:
    import asyncio

    from patrd.engine.swarm_backend import knock

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await knock("127.0.0.1", port, 1.0)
    finally:
        server.close()
        await server.wait_closed()
    assert not await knock("127.0.0.1", port, 1.0)


def test_a_volume_keeps_its_recorded_node_and_a_new_one_goes_to_the_emptiest() -> None:
    from patrd.engine.swarm_backend import homes_recorded, pick_home, volume_home

    def raw(node_id: str, labels: dict[str, str], availability: str = "active") -> dict[str, Any]:
        return {
            "ID": node_id,
            "Spec": {"Availability": availability, "Labels": labels},
            "Status": {"State": "ready"},
        }

    nodes = [
        raw("a", {}),
        raw("b", {"patrd.volume.patrd.web.data.0": "owner1"}),
        raw("c", {"patrd.volume.patrd.web.data.1": "someone-else"}),
        raw("d", {}, availability="drain"),
    ]
    assert volume_home(nodes, ["patrd.web.data.0"], "owner1") == "b"
    assert volume_home(nodes, ["patrd.web.data.1"], "owner1") is None  # another install's
    assert pick_home(nodes, {"a": 3, "b": 1, "c": 1}, out=()) == "b"  # fewest; ties by ID
    assert pick_home(nodes, {"a": 3, "b": 1, "c": 1}, out={"b"}) == "c"
    assert pick_home(nodes, {}, out={"a", "b", "c"}) is None  # d is drained
    assert homes_recorded(nodes, "owner1") == {"a": 0, "b": 1, "c": 0, "d": 0}


def test_plain_containers_of_the_docker_backend_are_stale_instances_here() -> None:
    from patrd.engine.swarm_backend import is_container_id, overlay, standalone_instances

    labels = {
        "patrd.managed": "1",
        "patrd.deployment": "web",
        "patrd.deployment-id": "dep",
        "patrd.revision": "3",
        "patrd.instance": "1",
        "patrd.template": "abc",
    }
    plain = {
        "Id": "f" * 64,
        "Names": ["/patrd-web-r3-1-0a1b"],
        "Labels": labels,
        "State": "running",
        "Status": "Up 3 minutes",
        "NetworkSettings": {"Networks": {"patrd-web": {"IPAddress": "10.213.0.2"}}},
    }
    task = {**plain, "Labels": {**labels, "com.docker.swarm.task.id": "t1"}}
    (inst,) = standalone_instances([plain, task])
    assert (inst.slot, inst.ip, inst.template) == (1, "10.213.0.2", "abc+standalone")
    assert inst.reach(80) == 80  # dialled at its bridge address, as before the switch
    assert is_container_id(inst.container_id)
    assert not is_container_id("svc1.t1") and not is_container_id("x" * 64)
    assert overlay("patrd-web") == "psw-web" == overlay("psw-web")


def test_a_failed_knock_counts_only_while_this_node_answers_its_own() -> None:
    from patrd.engine.swarm_backend import unreachable

    addresses = {"me": "10.0.0.1", "w1": "10.0.0.2", "w2": "10.0.0.3", "x": ""}
    assert unreachable(addresses, [True, False, True, False], "me") == {"w1"}
    assert unreachable(addresses, [False, False, True, True], "me") is None
