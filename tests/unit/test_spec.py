"""Tables for patrd.model.spec: every bad field names its exact path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from patrd.model.errors import SpecError
from patrd.model.spec import (
    DEFAULT_REGISTRY,
    DeploymentSpec,
    PortProtocol,
    Resources,
    Scale,
    parse_create,
    parse_update,
    spec_from_json,
)

REGION = "local"
BASE: dict[str, Any] = {
    "name": "web",
    "image": "library/nginx",
    "tag": "1.25",
    "ports": {"80": "http"},
}


def create(**overrides: Any) -> DeploymentSpec:
    return parse_create({**BASE, **overrides}, region=REGION)


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in BASE.items() if k != key}


# --- create: valid ----------------------------------------------------------


def test_create_minimal_fills_defaults() -> None:
    spec = parse_create(BASE, region=REGION)
    assert spec == DeploymentSpec(
        name="web",
        image="library/nginx",
        tag="1.25",
        ports=((80, PortProtocol.HTTP),),
        registry=DEFAULT_REGISTRY,
        env=(),
        scale=Scale(1, 1),
        resources=Resources(1.0, 512),
        deploy_on_create=True,
        region=REGION,
    )
    assert spec.image_ref == "library/nginx:1.25"
    assert spec.http_ports == (80,)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"name": "ab"}, lambda s: s.name == "ab"),
        ({"name": "a" * 57}, lambda s: len(s.name) == 57),
        ({"name": "my-app-2"}, lambda s: s.name == "my-app-2"),
        ({"image": "nginx"}, lambda s: s.image == "nginx"),
        ({"image": "org/sub/my_app__x.y-z"}, lambda s: s.image == "org/sub/my_app__x.y-z"),
        ({}, lambda s: s.tag == "1.25"),
        ({"tag": "v1.2.3-rc_1"}, lambda s: s.tag == "v1.2.3-rc_1"),
        ({"tag": "a" * 128}, lambda s: len(s.tag) == 128),
        ({"registry": "ghcr.io"}, lambda s: s.image_ref == "ghcr.io/library/nginx:1.25"),
        ({"registry": "localhost:5000"}, lambda s: s.registry == "localhost:5000"),
        ({"registry": "registry-1.docker.io"}, lambda s: s.registry == DEFAULT_REGISTRY),
        ({"registry": " GHCR.io "}, lambda s: s.registry == "ghcr.io"),
        (
            {"ports": {"8080": "http", "80": "http"}},
            lambda s: s.ports == ((80, PortProtocol.HTTP), (8080, PortProtocol.HTTP)),
        ),
        ({"ports": {"65535": "http"}}, lambda s: s.http_ports == (65535,)),
        ({"ports": {"1": "http"}}, lambda s: s.http_ports == (1,)),
        (
            {"env": {"B": "2", "A": "1", "_x": ""}},
            lambda s: s.env == (("A", "1"), ("B", "2"), ("_x", "")),
        ),
        ({"env": {"URL": "a=b"}}, lambda s: s.env == (("URL", "a=b"),)),
        ({"scale": {"min": 2}}, lambda s: s.scale == Scale(2, 2)),
        ({"scale": {"min": 1, "max": 5}}, lambda s: s.scale == Scale(1, 5)),
        ({"scale": {"max": 256}}, lambda s: s.scale == Scale(1, 256)),
        ({"resources": {"cpu": 0.25}}, lambda s: s.resources == Resources(0.25, 512)),
        ({"resources": {"cpu": 2}}, lambda s: s.resources.cpu == 2.0),
        ({"resources": {"memory_mb": 64}}, lambda s: s.resources == Resources(1.0, 64)),
        ({"deploy_on_create": False}, lambda s: s.deploy_on_create is False),
        ({"region": "local"}, lambda s: s.region == "local"),
        ({"region": ""}, lambda s: s.region == "local"),
        ({"region": None}, lambda s: s.region == "local"),
    ],
)
def test_create_valid(overrides: dict[str, Any], check: Any) -> None:
    assert check(create(**overrides))


def test_tag_defaults_to_latest() -> None:
    assert parse_create(without("tag"), region=REGION).tag == "latest"


def test_json_round_trip() -> None:
    spec = create(env={"A": "1"}, scale={"min": 2, "max": 4}, resources={"cpu": 0.5})
    assert spec_from_json(spec.to_json()) == spec
    assert spec.to_json()["ports"] == {"80": "http"}


# --- create: each bad field names its path ----------------------------------


BAD_CREATE: list[tuple[str, dict[str, Any], str]] = [
    # name
    ("name too short", {"name": "a"}, "name"),
    ("name too long", {"name": "a" * 65}, "name"),
    ("name too long for a DNS label", {"name": "a" * 58}, "name"),
    ("name uppercase", {"name": "Web"}, "name"),
    ("name leading dash", {"name": "-web"}, "name"),
    ("name trailing dash", {"name": "web-"}, "name"),
    ("name underscore", {"name": "my_app"}, "name"),
    ("name not a string", {"name": 42}, "name"),
    ("name null", {"name": None}, "name"),
    # image
    ("image with tag", {"image": "nginx:1.25"}, "image"),
    ("image with digest", {"image": "nginx@sha256:abc"}, "image"),
    ("image uppercase", {"image": "Library/Nginx"}, "image"),
    ("image empty", {"image": ""}, "image"),
    ("image empty component", {"image": "library//nginx"}, "image"),
    ("image too long", {"image": "a" * 256}, "image"),
    ("image not a string", {"image": ["nginx"]}, "image"),
    # tag
    ("tag leading dash", {"tag": "-bad"}, "tag"),
    ("tag leading dot", {"tag": ".bad"}, "tag"),
    ("tag with space", {"tag": "bad tag"}, "tag"),
    ("tag with colon", {"tag": "1:2"}, "tag"),
    ("tag empty", {"tag": ""}, "tag"),
    ("tag too long", {"tag": "a" * 129}, "tag"),
    ("tag not a string", {"tag": 1.25}, "tag"),
    # registry
    ("registry with path", {"registry": "ghcr.io/org"}, "registry"),
    ("registry with space", {"registry": "my registry"}, "registry"),
    # ports
    ("ports empty", {"ports": {}}, "ports"),
    ("ports not an object", {"ports": [80]}, "ports"),
    ("port zero", {"ports": {"0": "http"}}, "ports.0"),
    ("port leading zero", {"ports": {"080": "http"}}, "ports.080"),
    ("port too large", {"ports": {"70000": "http"}}, "ports.70000"),
    ("port not a number", {"ports": {"abc": "http"}}, "ports.abc"),
    ("port negative", {"ports": {"-1": "http"}}, "ports.-1"),
    ("port protocol udp", {"ports": {"80": "udp"}}, "ports.80"),
    ("port protocol not a string", {"ports": {"80": 1}}, "ports.80"),
    ("port protocol uppercase", {"ports": {"80": "HTTP"}}, "ports.80"),
    # env
    ("env name starts with digit", {"env": {"1BAD": "x"}}, "env.1BAD"),
    ("env name with dash", {"env": {"BAD-NAME": "x"}}, "env.BAD-NAME"),
    ("env name empty", {"env": {"": "x"}}, "env."),
    ("env reserved PATR", {"env": {"PATR": "1"}}, "env.PATR"),
    ("env reserved DEPLOYMENT_ID", {"env": {"DEPLOYMENT_ID": "x"}}, "env.DEPLOYMENT_ID"),
    ("env reserved PATRD_REVISION", {"env": {"PATRD_REVISION": "x"}}, "env.PATRD_REVISION"),
    ("env value number", {"env": {"PORT": 8080}}, "env.PORT"),
    ("env value null", {"env": {"A": None}}, "env.A"),
    ("env value bool", {"env": {"A": True}}, "env.A"),
    ("env value NUL", {"env": {"A": "x\x00y"}}, "env.A"),
    ("env value too long", {"env": {"A": "x" * (32 * 1024 + 1)}}, "env.A"),
    ("env too many", {"env": {f"V{i}": "" for i in range(257)}}, "env"),
    ("env not an object", {"env": ["A=1"]}, "env"),
    # scale
    ("scale min 0", {"scale": {"min": 0}}, "scale.min"),
    ("scale min negative", {"scale": {"min": -1}}, "scale.min"),
    ("scale max below min", {"scale": {"min": 3, "max": 2}}, "scale.max"),
    ("scale max 257", {"scale": {"max": 257}}, "scale.max"),
    ("scale min 257", {"scale": {"min": 257}}, "scale.min"),
    ("scale min string", {"scale": {"min": "2"}}, "scale.min"),
    ("scale min float", {"scale": {"min": 1.5}}, "scale.min"),
    ("scale min bool", {"scale": {"min": True}}, "scale.min"),
    ("scale max bool", {"scale": {"max": False}}, "scale.max"),
    ("scale unknown key", {"scale": {"desired": 2}}, "scale.desired"),
    ("scale not an object", {"scale": 2}, "scale"),
    # resources
    ("cpu too small", {"resources": {"cpu": 0.1}}, "resources.cpu"),
    ("cpu zero", {"resources": {"cpu": 0}}, "resources.cpu"),
    ("cpu too large", {"resources": {"cpu": 65}}, "resources.cpu"),
    ("cpu string", {"resources": {"cpu": "1"}}, "resources.cpu"),
    ("cpu bool", {"resources": {"cpu": True}}, "resources.cpu"),
    ("cpu NaN", {"resources": {"cpu": float("nan")}}, "resources.cpu"),
    ("memory too small", {"resources": {"memory_mb": 10}}, "resources.memory_mb"),
    ("memory float", {"resources": {"memory_mb": 128.5}}, "resources.memory_mb"),
    ("memory too large", {"resources": {"memory_mb": 1024 * 1024 + 1}}, "resources.memory_mb"),
    ("resources unknown key", {"resources": {"gpu": 1}}, "resources.gpu"),
    # the rest
    ("region unknown", {"region": "mars"}, "region"),
    ("region not a string", {"region": 1}, "region"),
    ("deploy_on_create string", {"deploy_on_create": "yes"}, "deploy_on_create"),
    ("unknown top-level field", {"replicas": 2}, "replicas"),
]


@pytest.mark.parametrize(
    ("overrides", "field"), [pytest.param(o, f, id=i) for i, o, f in BAD_CREATE]
)
def test_create_invalid_names_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        create(**overrides)
    assert info.value.field == field
    assert info.value.message
    assert str(info.value) == f"{field}: {info.value.message}"


@pytest.mark.parametrize("key", ["name", "image", "ports"])
def test_create_missing_required_field(key: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_create(without(key), region=REGION)
    assert (info.value.field, info.value.message) == (key, "is required")


@pytest.mark.parametrize("body", [None, [], "web", 1])
def test_create_body_must_be_object(body: Any) -> None:
    with pytest.raises(SpecError) as info:
        parse_create(body, region=REGION)
    assert info.value.field == "body"


def test_unknown_region_lists_known_regions() -> None:
    with pytest.raises(SpecError) as info:
        create(region="mars")
    assert "'mars'" in info.value.message
    assert "known regions: local" in info.value.message


def test_unknown_field_lists_allowed_fields() -> None:
    with pytest.raises(SpecError) as info:
        create(replicas=2)
    assert "allowed:" in info.value.message
    assert "scale" in info.value.message


def test_unknown_protocol_lists_allowed() -> None:
    with pytest.raises(SpecError) as info:
        create(ports={"80": "udp"})
    assert info.value.message == "unknown protocol 'udp'; allowed: http"


# Known defects of patrd/model/spec.py (reported to the lead). strict=True: when a
# fix lands these XPASS and fail, so the marker gets removed with the fix.
LOOKALIKE_INPUT = [
    pytest.param(
        {"name": "web\n"},
        "name",
        id="name-trailing-newline",
    ),
    pytest.param(
        {"image": "nginx\n"},
        "image",
        id="image-trailing-newline",
    ),
    pytest.param(
        {"tag": "v1\n"},
        "tag",
        id="tag-trailing-newline",
    ),
    pytest.param(
        {"env": {"FOO\n": "x"}},
        "env.FOO\n",
        id="env-name-trailing-newline",
    ),
    pytest.param(
        {"ports": {"\u00b2": "http"}},
        "ports.\u00b2",
        id="port-superscript-digit",
    ),
    pytest.param(
        {"ports": {"\u0668\u0660": "http"}},
        "ports.\u0668\u0660",
        id="port-arabic-indic-digits",
    ),
]


@pytest.mark.parametrize(("overrides", "field"), LOOKALIKE_INPUT)
def test_create_refuses_lookalike_input(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        create(**overrides)
    assert info.value.field == field


# --- update -----------------------------------------------------------------


CURRENT = parse_create(
    {
        **BASE,
        "registry": "ghcr.io",
        "env": {"A": "1", "B": "2"},
        "scale": {"min": 2, "max": 4},
        "resources": {"cpu": 0.5, "memory_mb": 256},
    },
    region=REGION,
)


@pytest.mark.parametrize(
    ("key", "value", "phrase"),
    [
        ("tag", "1.26", "create a new deployment with the new tag"),
        ("image", "library/httpd", "cannot be changed"),
        ("name", "web2", "cannot be renamed"),
        ("registry", "docker.io", "cannot be changed"),
        ("region", "elsewhere", "cannot be changed"),
        ("deploy_on_create", False, "only applies when creating"),
    ],
)
def test_update_refuses_immutable_change(key: str, value: Any, phrase: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_update(CURRENT, {key: value})
    assert info.value.field == key
    assert phrase in info.value.message


def test_update_accepts_unchanged_immutable_fields() -> None:
    body = {k: CURRENT.to_json()[k] for k in ("name", "image", "tag", "registry", "region")}
    assert parse_update(CURRENT, body) == CURRENT


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, CURRENT),
        ({"scale": {"max": 8}}, replace(CURRENT, scale=Scale(2, 8))),
        ({"scale": {"min": 6}}, replace(CURRENT, scale=Scale(6, 6))),
        ({"scale": {"min": 1, "max": 1}}, replace(CURRENT, scale=Scale(1, 1))),
        ({"env": {"C": "3"}}, replace(CURRENT, env=(("C", "3"),))),
        ({"env": {}}, replace(CURRENT, env=())),
        (
            {"ports": {"8080": "http"}},
            replace(CURRENT, ports=((8080, PortProtocol.HTTP),)),
        ),
        (
            {"resources": {"cpu": 2}},
            replace(CURRENT, resources=Resources(2.0, 256)),
        ),
        (
            {"resources": {"memory_mb": 1024}},
            replace(CURRENT, resources=Resources(0.5, 1024)),
        ),
    ],
)
def test_update_applies_changes_and_keeps_the_rest(
    body: dict[str, Any], expected: DeploymentSpec
) -> None:
    updated = parse_update(CURRENT, body)
    assert updated == expected
    for kept in ("name", "image", "tag", "registry", "region", "deploy_on_create"):
        assert getattr(updated, kept) == getattr(CURRENT, kept)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ports": {"70000": "http"}}, "ports.70000"),
        ({"ports": {}}, "ports"),
        ({"env": {"PATR": "x"}}, "env.PATR"),
        ({"scale": {"max": 1}}, "scale.max"),  # below the current min of 2
        ({"scale": {"min": 0}}, "scale.min"),
        ({"resources": {"cpu": 0.1}}, "resources.cpu"),
        ({"replicas": 3}, "replicas"),
        ([], "body"),
    ],
)
def test_update_invalid_names_field(body: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_update(CURRENT, body)
    assert info.value.field == field
