"""Spec tables for secrets refs, config mounts, volumes, security and registry fields."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from patrd.model.errors import SpecError
from patrd.model.spec import SecretRef, parse_create, parse_update, spec_from_json

BASE: dict[str, Any] = {"name": "web", "image": "x/y", "tag": "1", "ports": {"80": "http"}}


def create(**extra: Any):
    return parse_create({**BASE, **extra}, region="local")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"env": {"A": {"secret": "bad name"}}}, "env.A.secret"),
        ({"env": {"A": {"secret": "ok", "x": 1}}}, "env.A"),
        ({"env": {"A": 5}}, "env.A"),
        ({"config_mounts": {"a/b": b64(b"x")}}, "config_mounts.a/b"),
        ({"config_mounts": {".": b64(b"x")}}, "config_mounts.."),
        ({"config_mounts": {"f": "not base64!"}}, "config_mounts.f"),
        ({"config_mounts": {"f": b64(b"x" * (256 * 1024 + 1))}}, "config_mounts.f"),
        (
            {"config_mounts": {f"f{i}": b64(b"x" * 200_000) for i in range(6)}},
            "config_mounts",
        ),
        ({"volumes": {"Data": {"path": "/d", "size_gb": 1}}}, "volumes.Data"),
        ({"volumes": {"d": {"path": "/", "size_gb": 1}}}, "volumes.d.path"),
        ({"volumes": {"d": {"path": "/a/../b", "size_gb": 1}}}, "volumes.d.path"),
        ({"volumes": {"d": {"path": "/etc/config/x", "size_gb": 1}}}, "volumes.d.path"),
        (
            {"volumes": {"a": {"path": "/d", "size_gb": 1}, "b": {"path": "/d/", "size_gb": 1}}},
            "volumes.b.path",
        ),
        ({"volumes": {"d": {"path": "/d"}}}, "volumes.d.size_gb"),
        (
            {"volumes": {"d": {"path": "/d", "size_gb": 1}}, "scale": {"min": 2, "max": 3}},
            "scale.max",
        ),
        ({"security": {"extra_capabilities": ["NOPE"]}}, "security.extra_capabilities[0]"),
        ({"security": {"pids_limit": -1}}, "security.pids_limit"),
        ({"security": {"privileged": True}}, "security.privileged"),
        ({"registry_auth": {"secret": ""}}, "registry_auth.secret"),
        ({"deploy_on_push": "yes"}, "deploy_on_push"),
    ],
)
def test_refused(extra, field):
    with pytest.raises(SpecError) as info:
        create(**extra)
    assert info.value.field == field


def test_round_trip_and_hash():
    spec = create(
        env={"PW": {"secret": "db"}, "X": "1"},
        config_mounts={"b.conf": b64(b"two"), "a.conf": b64(b"one")},
        volumes={"data": {"path": "/data/", "size_gb": 3}},
        security={"extra_capabilities": ["cap_net_raw"], "pids_limit": 10},
        registry="local",
        registry_auth={"secret": "reg"},
        deploy_on_push=False,
    )
    assert spec_from_json(spec.to_json()) == spec
    assert dict(spec.env)["PW"] == SecretRef("db")
    assert spec.secret_names == {"db", "reg"}
    assert spec.volumes[0].path == "/data"
    assert spec.security.extra_capabilities == ("NET_RAW",)
    assert spec.image_ref_via("127.0.0.1:5000") == "127.0.0.1:5000/x/y:1"
    expected = hashlib.sha512(b"a.conf\x00one\x00b.conf\x00two\x00").hexdigest()
    assert spec.config_map_hash == expected


def test_template_changes_only_for_what_a_container_is_made_of():
    spec = create(env={"PW": {"secret": "db"}})
    base = spec.instance_template(None, {"db": 1})
    assert spec.instance_template(None, {"db": 2}) != base, "a rotated secret rolls"
    same = [
        {"scale": {"min": 2, "max": 2}},
        {"ports": {"80": "http", "81": "http"}},
    ]
    for change in same:
        assert parse_update(spec, change).instance_template(None, {"db": 1}) == base, change
    probed = parse_update(spec, {"startup_probe": {"port": 80, "path": "/h"}})
    assert probed.instance_template(None, {"db": 1}) != base, "a probe change rolls out"
    moved = parse_update(probed, {"startup_probe": {"port": 80, "path": "/never"}})
    assert moved.instance_template(None, {"db": 1}) != probed.instance_template(None, {"db": 1})
    live = parse_update(spec, {"liveness_probe": {"port": 80, "path": "/h"}})
    assert live.instance_template(None, {"db": 1}) != base
    with_file = parse_update(spec, {"config_mounts": {"a": b64(b"1")}})
    assert with_file.instance_template(None, {"db": 1}) != base, "the first file adds a mount"
    edited = parse_update(with_file, {"config_mounts": {"a": b64(b"2")}})
    assert edited.instance_template(None, {"db": 1}) == with_file.instance_template(
        None, {"db": 1}
    ), "edits are live, no restart"
    assert (
        parse_update(spec, {"env": {"PW": {"secret": "db"}, "N": "1"}}).instance_template(
            None, {"db": 1}
        )
        != base
    )


def test_volumes_only_grow():
    spec = create(volumes={"d": {"path": "/d", "size_gb": 2}})
    grown = parse_update(spec, {"volumes": {"d": {"path": "/d", "size_gb": 5}}})
    assert grown.volumes[0].size_gb == 5
    for bad, field in [
        ({"d": {"path": "/d", "size_gb": 1}}, "volumes.d.size_gb"),
        ({"d": {"path": "/e", "size_gb": 2}}, "volumes.d.path"),
        ({}, "volumes.d"),
    ]:
        with pytest.raises(SpecError) as info:
            parse_update(spec, {"volumes": bad})
        assert info.value.field == field
