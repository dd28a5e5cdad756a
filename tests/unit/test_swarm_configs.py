"""Config files as Swarm configs: naming, the service's references, what is collected."""

from __future__ import annotations

import re
from typing import Any

from patrd.engine.hardening import Hardening
from patrd.engine.labels import deployment_labels
from patrd.engine.swarm import service_spec
from patrd.engine.swarm_configs import (
    MAX_CONFIG_NAME,
    config_name,
    config_refs,
    unused_configs,
)
from patrd.model.instances import InstanceSpec
from patrd.model.spec import parse_create

# Swarm's rule for a config's name (swarmkit validateAnnotations).
SWARM_NAME_RE = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")


def test_config_name_follows_the_content_and_stays_within_swarms_rules() -> None:
    one = config_name("o1", "web", "d1", b"a=1\n")
    assert one.startswith("patrd.web.")
    assert one == config_name("o1", "web", "d1", b"a=1\n")  # unchanged file: same config
    assert one != config_name("o1", "web", "d1", b"a=2\n")  # changed: a new one
    assert one != config_name("o2", "web", "d1", b"a=1\n")  # another install
    assert one != config_name("o1", "web", "d2", b"a=1\n")  # another deployment
    long = config_name("o1", "a" * 57, "d1", b"")
    assert len(long) <= MAX_CONFIG_NAME
    assert SWARM_NAME_RE.fullmatch(long) and SWARM_NAME_RE.fullmatch(one)


def test_config_refs_mount_each_file_read_only_in_etc_config() -> None:
    files = (("b.conf", b"B"), ("a.conf", b"A"))
    names = {"a.conf": "patrd.web.aaa", "b.conf": "patrd.web.bbb"}
    refs = config_refs(files, {"patrd.web.aaa": "id-a", "patrd.web.bbb": "id-b"}, names)
    assert refs == [
        {
            "File": {"Name": "/etc/config/a.conf", "UID": "0", "GID": "0", "Mode": 0o644},
            "ConfigID": "id-a",
            "ConfigName": "patrd.web.aaa",
        },
        {
            "File": {"Name": "/etc/config/b.conf", "UID": "0", "GID": "0", "Mode": 0o644},
            "ConfigID": "id-b",
            "ConfigName": "patrd.web.bbb",
        },
    ]


def _spec(files: tuple[tuple[str, bytes], ...]) -> InstanceSpec:
    return InstanceSpec(
        container_name="web-1",
        deployment_id="d1",
        deployment="web",
        revision=1,
        slot=1,
        template="t",
        image="img:1",
        env=(),
        network="psw-web",
        hostname="web-1",
        cpu=0.5,
        memory_mb=64,
        stop_timeout_s=5,
        config_dir="/var/lib/patrd/config/d1",
        config_files=files,
    )


def test_service_spec_mounts_configs_and_no_host_directory() -> None:
    refs = config_refs((("a.conf", b"A"),), {"n": "id"}, {"a.conf": "n"})
    body = service_spec(
        _spec((("a.conf", b"A"),)),
        owner="o",
        hardening=Hardening(),
        target_ports=(80,),
        configs=refs,
    )
    container = body["TaskTemplate"]["ContainerSpec"]
    assert container["Configs"] == refs
    assert all(m["Type"] != "bind" for m in container["Mounts"])
    plain = service_spec(_spec(()), owner="o", hardening=Hardening(), target_ports=(80,))
    assert "Configs" not in plain["TaskTemplate"]["ContainerSpec"]


def _config(config_id: str, owner: str, deployment_id: str) -> dict[str, Any]:
    return {
        "ID": config_id,
        "Spec": {
            "Name": f"patrd.x.{config_id}",
            "Labels": deployment_labels(owner, "x", deployment_id),
        },
    }


def _service(*config_ids: str) -> dict[str, Any]:
    return {
        "Spec": {
            "TaskTemplate": {"ContainerSpec": {"Configs": [{"ConfigID": c} for c in config_ids]}}
        }
    }


def test_unused_configs_are_this_owners_unreferenced_ones() -> None:
    configs = [
        _config("c-old", "me", "d1"),  # the file changed: no service mounts it any more
        _config("c-kept", "me", "d1"),  # unchanged, mounted by the new service
        _config("c-other-dep", "me", "d2"),  # deployment deleted
        _config("c-theirs", "them", "d1"),  # another install's: never ours to remove
        {"ID": "c-unlabelled", "Spec": {"Name": "mine"}},  # made by hand
    ]
    services = [_service("c-kept"), {"Spec": {"TaskTemplate": {"ContainerSpec": {}}}}]
    assert unused_configs(configs, services, "me") == ["c-old", "c-other-dep"]
    assert unused_configs(configs, services, "me", "d1") == ["c-old"]
    assert unused_configs(configs, [*services, _service("c-old", "c-other-dep")], "me") == []
    assert unused_configs([], services, "me") == []


def test_config_edits_roll_out_only_where_configs_are_immutable() -> None:
    base = {"name": "web", "image": "nginx", "tag": "1", "ports": {"80": "http"}}
    one = parse_create({**base, "config_mounts": {"a.conf": "QQ=="}}, region="")
    two = parse_create({**base, "config_mounts": {"a.conf": "Qg=="}}, region="")
    none = parse_create(base, region="")
    # docker backend: written in place, only the first file adds a mount
    assert one.instance_template() == two.instance_template()
    assert one.instance_template() != none.instance_template()
    # swarm backend: a new content is a new template (a rollout)
    assert one.instance_template(config_content=True) != two.instance_template(config_content=True)
    assert one.instance_template(config_content=True) == one.instance_template(config_content=True)
    # no config files: the template is the docker backend's (nothing rolls out on upgrade)
    assert none.instance_template(config_content=True) == none.instance_template()
