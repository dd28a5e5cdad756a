"""The API's views are declared once (patrd/model/view_shapes.py): the served schema is the
generated one, and what the builders emit for representative records validates against it.

Validation is strict here: every object schema with properties is closed
(``additionalProperties: false``) before checking, so a key a builder emits but
the declaration lacks fails, as does a missing required key or a wrong type.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api import firewall, secrets, shapes, urls
from patrd.api.app import build_app
from patrd.api.openapi import OPENAPI
from patrd.api.releases import RESOLVER
from patrd.firewall.apply import Counter, FirewallStatus
from patrd.model.deployment import DeploymentRecord, RevisionRecord, RevisionState
from patrd.model.naming import volume_names
from patrd.model.records import EventRecord, SecretRecord
from patrd.model.releases import Pin, pin_from_digest
from patrd.model.typed_schema import Doc, Ref, Stated, object_schema, schema_of
from patrd.model.urls import UrlRecord, parse_create
from patrd.model.view_shapes import VIEWS, url_request_schemas, view_schemas
from patrd.model.views import InstanceView
from patrd.observe import cost
from patrd.settings.config import Config, Listen, ProxyConfig, TlsConfig
from patrd.state.store import Store
from patrd.tls.controller import CertStatus
from tests.support.api_fakes import FakeController
from tests.support.observed import deployment_record

Client = TestClient[web.Request, web.Application]
CONFIG = Config(
    proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 8080),), base_domain="example.test"),
    tls=TlsConfig(https_listen=(Listen("0.0.0.0", 8443),)),
)
GENERATED = {**view_schemas(), **url_request_schemas()}
KEPT = volume_names("web", ["data"], range(1))  # the volumes of one instance


# --- a strict JSON Schema from the document's OpenAPI 3.0 dialect ----------


def _strict(node: Any) -> Any:
    """``nullable`` as JSON Schema says it, and every object with properties closed."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "oneOf" in out:
            out["oneOf"] = [*out["oneOf"], {"type": "null"}]
    if "properties" in out and "additionalProperties" not in out and "allOf" not in out:
        out["additionalProperties"] = False
    return out


def _validate(value: Any, component: str) -> None:
    root = _strict(copy.deepcopy(OPENAPI))
    if component == "Redeployed":  # allOf: each part closed on its own keys
        _validate({k: v for k, v in value.items() if k != "redeploy"}, "Deployment")
        part = root["components"]["schemas"]["Redeployed"]["allOf"][1]
        jsonschema.Draft4Validator({**root, **part}).validate({"redeploy": value["redeploy"]})
        return
    schema = {**root, "$ref": f"#/components/schemas/{component}"}
    jsonschema.Draft4Validator(schema).validate(json.loads(json.dumps(value)))


# --- representative records -------------------------------------------------

INSTANCE = InstanceView(
    name="web-0",
    container_id="c" * 64,
    revision=2,
    slot=0,
    state="running",
    ready=True,
    address=None,
    restarts=1,
    current=False,
    probe="ready",
    probe_detail="200",
    liveness_failures=0,
)


FIREWALL = FirewallStatus(
    enabled=True,
    applied=False,
    ruleset="table inet patrd {}",
    counters={"rate_limited": Counter(3, 180)},
    error="nft: permission denied",
    applied_at=1.7e9,
    loads=2,
)


def _cert(**changes: Any) -> CertStatus:
    base: dict[str, Any] = {
        "domain": "a.example.com",
        "status": "issued",
        "issuer": "acme",
        "serial": "0a1b",
        "not_before": 1.7e9,
        "not_after": 1.8e9,
        "renew_at": None,
        "error": "",
        "failures": 0,
        "next_attempt_at": None,
        "attempts": 1,
        "orders_last_hour": 0,
        "orders_total": 1,
        "renewals": 0,
        "alert": False,
    }
    return CertStatus(**{**base, **changes})


class _Tls:
    def __init__(self, status: CertStatus | None) -> None:
        self.cert = status

    def status(self, domain: str, now: float | None = None) -> CertStatus:
        assert self.cert is not None
        return self.cert

    def statuses(self) -> list[CertStatus]:
        return [] if self.cert is None else [self.cert]

    def wake(self) -> None:
        pass


def _capacity() -> Any:
    record = deployment_record({"name": "web"})
    return cost.capacity(record.spec, [(record.spec, 2)], cost.Node(cpus=1.0, memory_mb=512))


def _built() -> list[tuple[str, Any]]:
    """(component, what its builder emits) for records that set every optional part."""
    record = deployment_record(
        {
            "name": "web",
            "scale": {"min": 2, "max": 2},
            "env": {"A": "b", "S": {"secret": "token"}},
            "volumes": {"data": {"path": "/data", "size_gb": 1}},
            "startup_probe": {"port": 80},
        },
        replicas=2,
    )
    full = shapes.deployment_json(
        record, CONFIG, instances=[INSTANCE], capacity=_capacity().to_json()
    )
    revision = RevisionRecord(
        revision=2,
        spec=record.spec,
        state=RevisionState.DEPLOYED,
        reason="",
        image_id="sha256:" + "1" * 64,
        pinned_image=None,
        created_at=1.7e9,
        deployed_at=1.7e9 + 5,
        digest_ref="x@sha256:" + "2" * 64,
    )
    secret = SecretRecord("token", 3, 1.7e9, 1.7e9, ("web",))
    targets = [
        {"deployment": "web", "port": 80},
        {"redirect": "https://b.example.com/x", "permanent": False},
        {"proxy": "http://10.0.0.1:8080/base"},
    ]
    built: list[tuple[str, Any]] = [
        ("Deployment", full),
        ("Deployment", shapes.deployment_json(record, CONFIG)),
        ("Instance", shapes.instance_json(INSTANCE)),
        ("Event", shapes.event_json(EventRecord(7, "d1", 1.7e9, "status", "running", None))),
        ("HistoryEntry", shapes.history_json(revision, ["env A changed"])),
        ("Secret", secrets.secret_json(secret)),
        ("Secret", secrets.secret_json(secret, full=False)),
        ("Certificate", urls.certificate_json(_cert())),
        ("UrlTls", urls.url_tls_json(None)),
        ("Firewall", firewall.status_json(FIREWALL)),
        ("UrlTls", urls.url_tls_json(_cert(status="failed", issuer="", not_after=None))),
    ]
    for i, target in enumerate(targets):
        spec = parse_create(
            {
                "domain": f"a{i}.example.com",
                "path": "/api",
                "target": target,
                "max_body_bytes": 4096,
                "timeouts": {"upstream_header_timeout_s": 90},
            }
        )
        url = UrlRecord(id=f"u{i}", spec=spec, created_at=1.7e9, updated_at=1.7e9)
        built.append(("Url", urls.url_json(url, CONFIG, _Tls(_cert()))))
        built.append(("Url", urls.url_json(url, Config(), None)))
    return built


@pytest.mark.parametrize(("component", "value"), _built(), ids=lambda v: str(v)[:20])
def test_what_a_builder_emits_validates_against_its_generated_schema(
    component: str, value: Any
) -> None:
    _validate(value, component)


def test_the_strict_check_catches_an_undeclared_key_a_missing_key_and_a_wrong_type() -> None:
    event = shapes.event_json(EventRecord(7, "d1", 1.7e9, "status", "running", 2))
    _validate(event, "Event")
    for bad in (
        {**event, "extra": 1},
        {k: v for k, v in event.items() if k != "kind"},
        {**event, "revision": "2"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            _validate(bad, "Event")


def test_every_view_is_declared_in_the_document_as_generated() -> None:
    schemas = OPENAPI["components"]["schemas"]
    for name, schema in GENERATED.items():
        assert json.loads(json.dumps(schemas[name])) == json.loads(json.dumps(schema)), name
    assert set(VIEWS) <= set(schemas)


def test_required_keys_are_the_typed_dicts_and_properties_its_fields() -> None:
    for name, view in VIEWS.items():
        schema = GENERATED[name]
        assert list(schema["properties"]) == list(typing.get_type_hints(view)), name
        assert set(schema.get("required", [])) <= set(schema["properties"]), name


# --- the same views through the handlers, as the daemon serves them ---------


class _Resolver:
    """The tag now points at a new digest (the registry said so; no pull)."""

    async def resolve_tag(self, record: DeploymentRecord) -> tuple[Pin, str | None]:
        return pin_from_digest("library/nginx", "sha256:" + "a" * 64), "pulled by digest"


class _Controller(FakeController):
    """Reports one instance's volume in use."""

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {name: (0, 4096) for name in volume_names(deployment, ["data"], range(1))}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Client, FakeController]]:
    store = await Store.open(tmp_path / "patrd.db")
    controller = _Controller()
    app = build_app(store, controller, CONFIG, token=None, tls=_Tls(_cert()))
    app[RESOLVER] = _Resolver()
    async with TestClient(TestServer(app)) as c:
        yield c, controller
    await store.close()


async def _json(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_served_document_states_the_generated_views(
    client: tuple[Client, FakeController],
) -> None:
    c, _ = client
    served = await _json(await c.get("/v1/openapi.json"), 200)
    for name, schema in GENERATED.items():
        assert served["components"]["schemas"][name] == json.loads(json.dumps(schema)), name


async def test_handler_answers_validate_strictly(client: tuple[Client, FakeController]) -> None:
    c, controller = client
    body = {
        "name": "web",
        "image": "library/nginx",
        "ports": {"80": "http"},
        "volumes": {"data": {"path": "/data", "size_gb": 1}},
    }
    _validate(await _json(await c.post("/v1/deployments?dry_run=true", json=body), 200), "DryRun")
    created = await _json(await c.post("/v1/deployments", json=body), 201)
    _validate(created, "Deployment")
    assert "capacity" in created
    controller.by_id[created["id"]] = [INSTANCE]
    patched = await c.patch("/v1/deployments/web", json={"env": {"A": "1"}})
    _validate(await _json(patched, 200), "Deployment")
    for path, component in [
        ("/v1/deployments", "DeploymentList"),
        ("/v1/deployments?limit=1", "DeploymentList"),
        ("/v1/deployments/web", "Deployment"),
        ("/v1/deployments/web/instances", "InstanceList"),
        ("/v1/deployments/web/events", "EventList"),
        ("/v1/deployments/web/history", "History"),
        ("/v1/certificates", "CertificateList"),
        ("/v1/health", "Health"),
        ("/v1/firewall", "Firewall"),
    ]:
        _validate(await _json(await c.get(path), 200), component)
    url = {"domain": "a.example.com", "target": {"deployment": "web", "port": 80}}
    made = await _json(await c.post("/v1/urls", json=url), 201)
    _validate(made, "Url")
    _validate(await _json(await c.get("/v1/urls"), 200), "UrlList")
    _validate(await _json(await c.delete(f"/v1/urls/{made['id']}"), 200), "Url")
    volumes = await _json(await c.get("/v1/deployments/web/volumes"), 200)
    _validate(volumes, "VolumeList")
    assert [v["used_bytes"] for v in volumes["volumes"]] == [4096]
    redeployed = await _json(await c.post("/v1/deployments/web/redeploy"), 200)
    assert redeployed["redeploy"]["warning"] == "pulled by digest"
    _validate(redeployed, "Redeployed")
    deleted = await _json(await c.delete("/v1/deployments/web?confirm=web"), 202)
    _validate(deleted, "Deployment")
    assert deleted["kept_volumes"] == KEPT


# --- how a type reads as a schema -------------------------------------------


class _Inner(TypedDict):
    """an inner part"""

    a: int


class _Sample(TypedDict):
    s: str
    n: float | None
    flag: bool
    kind: Literal["x", "y"]
    items: list[_Inner]
    counts: dict[str, int]
    anything: dict[str, Any]
    described: Annotated[int, Doc("how many", minimum=0)]
    referred: Annotated[dict[str, Any], Ref("Other")]
    stated: Annotated[dict[str, Any], Stated({"type": "object", "minProperties": 1})]
    maybe: NotRequired[_Inner]


def test_types_read_as_schemas() -> None:
    inner: dict[str, Any] = {
        "type": "object",
        "description": "an inner part",
        "required": ["a"],
        "properties": {"a": {"type": "integer"}},
    }
    assert schema_of(_Sample) == {
        "type": "object",
        "required": [
            "s",
            "n",
            "flag",
            "kind",
            "items",
            "counts",
            "anything",
            "described",
            "referred",
            "stated",
        ],
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number", "nullable": True},
            "flag": {"type": "boolean"},
            "kind": {"type": "string", "enum": ["x", "y"]},
            "items": {"type": "array", "items": inner},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "anything": {"type": "object"},
            "described": {"type": "integer", "minimum": 0, "description": "how many"},
            "referred": {"$ref": "#/components/schemas/Other"},
            "stated": {"type": "object", "minProperties": 1},
            "maybe": inner,
        },
    }
    named = schema_of(_Sample, {_Inner: "Inner"})
    assert named["properties"]["maybe"] == {"$ref": "#/components/schemas/Inner"}
    assert schema_of(_Inner, {_Inner: "Inner"})["properties"] == {"a": {"type": "integer"}}
    closed = object_schema(_Sample, required=("s",), closed=True)
    assert closed["required"] == ["s"] and closed["additionalProperties"] is False


def test_types_without_a_schema_are_refused() -> None:
    for tp in (set[int], int | str, Literal[1], dict[int, str], bytes):
        with pytest.raises(TypeError):
            schema_of(tp)
