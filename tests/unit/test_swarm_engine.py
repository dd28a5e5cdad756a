"""The Swarm adapter's pure translations (patrd/engine/swarm.py)."""

from __future__ import annotations

from typing import Any

from patrd.engine.hardening import Hardening
from patrd.engine.labels import named_volume_labels
from patrd.engine.swarm import node_address, node_info, pinned_reference, service_spec
from patrd.engine.swarm_tasks import current_task, published_ports, swarm_instance_from, task_state
from patrd.model.instances import ContainerState, InstanceSpec

SPEC = InstanceSpec(
    container_name="web-2",
    deployment_id="d1",
    deployment="web",
    revision=3,
    slot=2,
    template="",
    image="img:1",
    env=(("A", "1"),),
    network="patrd-web",
    hostname="web-2",
    cpu=0.5,
    memory_mb=128,
    stop_timeout_s=7,
    volumes=(("patrd-web-data-2", "/data"),),
    extra_capabilities=("NET_RAW",),
    pids_limit=50,
)


def task(version: int, desired: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "ID": f"t{version}",
        "Version": {"Index": version},
        "DesiredState": desired,
        "NodeID": extra.pop("node", "n1"),
        "Status": {"State": state, **extra},
    }


def test_service_spec_is_one_pinned_replica_with_host_ports_limits_and_labels() -> None:
    body = service_spec(
        SPEC,
        owner="o",
        hardening=Hardening(capabilities=("CHOWN",), pids_limit=100),
        target_ports=(80, 8081),
        node_id="node-b",
    )
    assert body["Name"] == "web-2"
    assert body["Mode"] == {"Replicated": {"Replicas": 1}}
    assert body["Labels"]["patrd.instance"] == "2"
    assert body["Labels"]["patrd.owner"] == "o"
    template = body["TaskTemplate"]
    container = template["ContainerSpec"]
    assert container["Labels"] == body["Labels"]
    assert container["Env"] == ["A=1"]
    assert container["Init"] is True
    assert container["StopGracePeriod"] == 7_000_000_000
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["CapabilityAdd"] == ["CHOWN", "NET_RAW"]
    assert container["Mounts"] == [
        {
            "Type": "volume",
            "Source": "patrd-web-data-2",
            "Target": "/data",
            "VolumeOptions": {"Labels": named_volume_labels("o", "web", "patrd-web-data-2", 2)},
        }
    ]
    assert named_volume_labels("o", "web", "patrd.web.data.2", 2) == {
        "patrd.managed": "1",
        "patrd.owner": "o",
        "patrd.deployment": "web",
        "patrd.volume": "data",
        "patrd.instance": "2",
    }
    assert template["Resources"]["Limits"] == {
        "NanoCPUs": 500_000_000,
        "MemoryBytes": 128 * 1024 * 1024,
        "Pids": 50,  # the spec's own limit wins over the node default
    }
    assert template["Placement"] == {"Constraints": ["node.id==node-b"]}
    assert template["Networks"] == [{"Target": "patrd-web", "Aliases": ["web-2"]}]
    assert [(p["TargetPort"], p["PublishMode"]) for p in body["EndpointSpec"]["Ports"]] == [
        (80, "host"),
        (8081, "host"),
    ]
    assert all("PublishedPort" not in p for p in body["EndpointSpec"]["Ports"])


def test_service_spec_unpinned_has_no_constraint() -> None:
    body = service_spec(SPEC, owner="o", hardening=Hardening(), target_ports=(80,))
    assert body["TaskTemplate"]["Placement"] == {}


def test_current_task_prefers_the_newest_meant_to_run() -> None:
    old = task(5, "shutdown", "shutdown")
    new = task(9, "running", "starting")
    newer_dead = task(12, "shutdown", "failed")
    assert current_task([old, newer_dead, new]) is new
    assert current_task([old, newer_dead]) is newer_dead
    assert current_task([]) is None


def test_task_state_maps_to_container_states() -> None:
    assert task_state(task(1, "running", "running")) == (ContainerState.RUNNING, None)
    assert task_state(task(1, "running", "preparing")) == (ContainerState.RESTARTING, None)
    failed = task(1, "shutdown", "failed", ContainerStatus={"ExitCode": 3})
    assert task_state(failed) == (ContainerState.DEAD, 3)
    assert task_state(task(1, "shutdown", "shutdown")) == (ContainerState.EXITED, 0)
    assert task_state(None) == (ContainerState.RESTARTING, None)


def test_published_ports_reads_host_mode_port_status_once_per_target() -> None:
    ports = [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 32768, "PublishMode": "host"},
        # Docker lists the IPv4 and IPv6 binding of the same port separately.
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 32768, "PublishMode": "host"},
        {"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 30443, "PublishMode": "ingress"},
    ]
    assert published_ports(task(1, "running", "running", PortStatus={"Ports": ports})) == {
        80: 32768
    }
    assert published_ports(task(1, "running", "running")) == {}


def test_node_address_falls_back_to_the_manager_address() -> None:
    assert node_address({"Status": {"Addr": "10.0.0.2"}}) == "10.0.0.2"
    manager = {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.0.0.1:2377"}}
    assert node_address(manager) == "10.0.0.1"


def test_node_info() -> None:
    raw = {
        "ID": "n1",
        "Description": {
            "Hostname": "vm",
            "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 4 << 30},
        },
        "Spec": {"Role": "manager", "Availability": "drain", "Labels": {"zone": "a"}},
        "Status": {"State": "ready", "Addr": "10.0.0.1"},
        "ManagerStatus": {"Leader": True, "Addr": "10.0.0.1:2377"},
    }
    info = node_info(raw, {"n1": 3})
    assert (info.role, info.availability, info.state, info.leader) == (
        "manager",
        "drain",
        "ready",
        True,
    )
    assert (info.cpus, info.memory_bytes, info.instances) == (2.0, 4 << 30, 3)
    assert info.labels == {"zone": "a"}


def test_instance_address_only_while_running() -> None:
    service = {
        "ID": "s1",
        "Spec": {
            "Name": "web-2",
            "Labels": service_spec(SPEC, owner="o", hardening=Hardening(), target_ports=(80,))[
                "Labels"
            ],
            "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishMode": "host"}]},
        },
    }
    status = {"Ports": [{"TargetPort": 80, "PublishedPort": 31000, "PublishMode": "host"}]}
    running = swarm_instance_from(
        service, task(4, "running", "running", node="n2", PortStatus=status), {"n2": "10.0.0.2"}
    )
    assert running is not None
    assert running.address == ("10.0.0.2", 31000)
    assert (running.instance.slot, running.instance.revision) == (2, 3)
    assert running.instance.container_id == "s1"
    assert running.instance.ip == "10.0.0.2"
    starting = swarm_instance_from(service, task(5, "running", "starting", node="n2"), {})
    assert starting is not None and starting.address is None
    assert swarm_instance_from({"ID": "x", "Spec": {"Labels": {}}}, None, {}) is None


def test_pinned_reference_prefers_the_repo_digest_then_the_image_id() -> None:
    image = {"Id": "sha256:aa", "RepoDigests": ["other@sha256:bb", "reg:5000/app@sha256:cc"]}
    assert pinned_reference("reg:5000/app:1.2", image) == "reg:5000/app@sha256:cc"
    assert pinned_reference("reg:5000/app", image) == "reg:5000/app@sha256:cc"
    assert pinned_reference("local/web:v1", {"Id": "sha256:aa"}) == "sha256:aa"
    assert pinned_reference("app@sha256:dd", image) == "app@sha256:dd"
