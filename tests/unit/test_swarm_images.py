"""The reference and credential a swarm service pulls its image with (swarm_images.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from patrd.engine.swarm_images import (
    PullSource,
    for_nodes,
    loopback_registry,
    node_reference,
    recent_failure,
    registry_auth_header,
    registry_of,
    remember,
    repository_of,
    task_error_reason,
)
from patrd.model.errors import ConfigError
from patrd.model.instances import RegistryAuth
from patrd.settings.config import parse

IMAGE_ID = "sha256:" + "1" * 64
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
AUTH = RegistryAuth(server="10.0.0.1:5000", username="patrd", password="s3cret")


def test_repository_of_tags_digests_and_ids() -> None:
    assert repository_of("10.0.0.1:5000/apps/web:stable") == "10.0.0.1:5000/apps/web"
    assert repository_of(f"10.0.0.1:5000/apps/web@{D1}") == "10.0.0.1:5000/apps/web"
    assert repository_of("10.0.0.1:5000/apps/web") == "10.0.0.1:5000/apps/web"
    assert repository_of("nginx:1.25") == "nginx"
    assert repository_of(IMAGE_ID) is None


def test_registry_of() -> None:
    assert registry_of(f"10.0.0.1:5000/apps/web@{D1}") == "10.0.0.1:5000"
    assert registry_of("registry.example.com/web:1") == "registry.example.com"
    assert registry_of("localhost/web:1") == "localhost"
    assert registry_of("library/nginx:1") is None
    assert registry_of("nginx") is None


def test_remember_keeps_the_repository_when_asked_by_id() -> None:
    first = remember(None, "10.0.0.1:5000/apps/web:stable", AUTH)
    assert first == PullSource("10.0.0.1:5000/apps/web", AUTH)
    again = remember(first, IMAGE_ID, AUTH)
    assert again.repository == "10.0.0.1:5000/apps/web"
    assert remember(None, IMAGE_ID, None) == PullSource(None, None)
    assert "s3cret" not in repr(first)


def test_an_image_id_becomes_the_registry_digest_of_its_repository() -> None:
    digests = [f"other.example/web@{D2}", f"10.0.0.1:5000/apps/web@{D1}"]
    source = PullSource("10.0.0.1:5000/apps/web", AUTH)
    assert node_reference(IMAGE_ID, digests, source) == f"10.0.0.1:5000/apps/web@{D1}"
    # Repository unknown: the credential's registry, else the first (sorted).
    assert node_reference(IMAGE_ID, digests, PullSource(None, AUTH)) == digests[1]
    assert node_reference(IMAGE_ID, digests, None) == f"10.0.0.1:5000/apps/web@{D1}"
    assert node_reference(IMAGE_ID, [f"b.example/x@{D1}", f"a.example/x@{D2}"], None) == (
        f"a.example/x@{D2}"
    )


def test_references_that_are_not_ids_and_unpushed_images_stay() -> None:
    assert node_reference("nginx:1.25", [f"nginx@{D1}"], None) == "nginx:1.25"
    ref = f"10.0.0.1:5000/apps/web@{D1}"
    assert node_reference(ref, [], None) == ref
    # Built on the manager, never pushed: only the ID names it.
    assert node_reference(IMAGE_ID, [], PullSource("patrd-test/web", None)) == IMAGE_ID


def test_the_auth_header_is_docker_s_base64url_json() -> None:
    decoded = json.loads(base64.urlsafe_b64decode(registry_auth_header(AUTH)))
    assert decoded == {"username": "patrd", "password": "s3cret", "serveraddress": "10.0.0.1:5000"}


def test_a_failed_pull_reason_names_node_image_and_where_to_look() -> None:
    reason = task_error_reason(f"No such image: 10.0.0.1:5000/apps/web@{D1}", "10.0.0.12")
    assert reason.startswith(f"node 10.0.0.12 could not pull 10.0.0.1:5000/apps/web@{D1}")
    assert "Swarm: images on every node" in reason
    assert task_error_reason("starting container failed: oops", "") == (
        "task failed on node ?: starting container failed: oops"
    )


def test_the_node_registry_is_renamed_for_the_nodes() -> None:
    ref = f"127.0.0.1:5000/apps/web@{D1}"
    local = RegistryAuth(server="127.0.0.1:5000", username="patrd", password="pw")
    renamed, auth = for_nodes(ref, local, "127.0.0.1:5000", "registry.example.com")
    assert renamed == f"registry.example.com/apps/web@{D1}"
    assert auth == RegistryAuth("registry.example.com", "patrd", "pw")
    # Other registries, other credentials, and no swarm_address: untouched.
    other = f"ghcr.io/me/web@{D1}"
    assert for_nodes(other, AUTH, "127.0.0.1:5000", "registry.example.com") == (other, AUTH)
    assert for_nodes(ref, local, "127.0.0.1:5000", "127.0.0.1:5000") == (ref, local)
    assert for_nodes(ref, local, "", "") == (ref, local)
    # A longer host that merely starts with the local name is not it.
    longer = f"127.0.0.1:50001/apps/web@{D1}"
    assert for_nodes(longer, None, "127.0.0.1:5000", "r.example")[0] == longer


def test_loopback_registry_names() -> None:
    assert loopback_registry("127.0.0.1:5000")
    assert loopback_registry("localhost:5000")
    assert loopback_registry("[::1]:5000")
    assert not loopback_registry("10.0.0.1:5000")
    assert not loopback_registry("registry.example.com")


def test_registry_swarm_address_is_checked_and_defaults_to_the_listen_address() -> None:
    config = parse({"registry": {"listen": "10.0.0.1:5000"}}, base_dir=Path("/nonexistent"))
    assert config.registry.nodes_host == "10.0.0.1:5000"
    config = parse(
        {"registry": {"swarm_address": "registry.example.com"}}, base_dir=Path("/nonexistent")
    )
    assert (config.registry.host, config.registry.nodes_host) == (
        "127.0.0.1:5000",
        "registry.example.com",
    )
    for bad in ("https://registry.example.com", "r.example/v2", " r.example"):
        with pytest.raises(ConfigError) as err:
            parse({"registry": {"swarm_address": bad}}, base_dir=Path("/nonexistent"))
        assert err.value.key == "registry.swarm_address"
        assert "host:port" in err.value.message


def test_the_newest_rejected_task_gives_the_reason() -> None:
    addresses = {"n2": "10.0.0.12", "n3": "10.0.0.13"}
    tasks = [
        {"Version": {"Index": 9}, "NodeID": "n3", "Status": {"State": "preparing"}},
        {
            "Version": {"Index": 7},
            "NodeID": "n2",
            "Status": {"State": "rejected", "Err": f"No such image: r.example/web@{D1}"},
        },
        {
            "Version": {"Index": 5},
            "NodeID": "n3",
            "Status": {"State": "failed", "Err": "task: non-zero exit (1)"},
        },
        {"Version": {"Index": 3}, "NodeID": "n3", "Status": {"State": "shutdown"}},
    ]
    reason = recent_failure(tasks, addresses)
    assert reason.startswith(f"node 10.0.0.12 could not pull r.example/web@{D1}")
    assert recent_failure(tasks[2:], addresses) == (
        "task failed on node 10.0.0.13: task: non-zero exit (1)"
    )
    assert recent_failure([tasks[0], tasks[3]], addresses) == ""
