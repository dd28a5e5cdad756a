"""The API's answers, declared once: a TypedDict per view, typing its builder, stating its schema.

The handlers' builders (patrd/api/shapes.py, urls.py, secrets.py,
releases.py, capacity.py) are typed to return these, so mypy checks that a
builder emits every key a view requires, with its type, and no other; the
OpenAPI document's schemas of the same names are generated from these classes
(``view_schemas()``, patrd/model/typed_schema.py says how a type reads). A
field is added, renamed or documented here, once.

Pure data, standard library only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from patrd.model.deployment import Intent, RevisionState, Status
from patrd.model.releases import Origin
from patrd.model.typed_schema import Doc, Ref, Schema, object_schema, schema_of
from patrd.model.url_shapes import UrlSpecJson

Timestamp = Annotated[str, Doc("RFC 3339, UTC", format="date-time")]
Uri = Annotated[str, Doc(format="uri")]
TlsStatus = Literal["pending", "issued", "failed"]
Issuer = Literal["acme", "local", ""]


# --- deployments -----------------------------------------------------------


class ProbeJson(TypedDict):
    phase: Annotated[str, Doc(enum=["", "starting", "ready", "failed", "unhealthy"])]
    last: Annotated[str, Doc("last result, e.g. 200")]
    liveness_failures: Annotated[int, Doc(minimum=0)]


class InstanceJson(TypedDict):
    name: Annotated[str, Doc(example="web-0")]
    container_id: str
    revision: int
    slot: int
    state: Annotated[str, Doc("Docker container state")]
    ready: Annotated[bool, Doc("in the proxy pool")]
    address: str | None
    restarts: int
    current: Annotated[bool, Doc("built from the target revision (false: being replaced)")]
    probe: ProbeJson
    waiting_for: Annotated[
        str,
        Doc(
            "the node (hostname and ID) holding this instance's volume data that it waits "
            "for while that node is drained, down or unreachable (swarm); empty when it "
            "does not wait"
        ),
    ]


class CostJson(TypedDict):
    """estimated cost per month at scale.min and scale.max (config [cost])"""

    min: float
    max: float
    currency: str
    period: Literal["month"]


class ResourcesJson(TypedDict):
    cpu: float
    memory_mb: int


class CapacityJson(TypedDict):
    """whether this node has CPUs and memory for this deployment's instances next to the
    running instances of the others (a warning, never a refusal; one instance larger
    than the node is refused with 422 on resources.cpu / resources.memory_mb).
    warning is set only on the create or update that over-commits the node"""

    fits: bool
    node: ResourcesJson
    required: ResourcesJson
    committed: ResourcesJson
    warning: str | None


class DeploymentJson(TypedDict):
    id: str
    name: str
    revision: Annotated[int, Doc(minimum=1)]
    status: Annotated[str, Doc(enum=[s.value for s in Status])]
    status_reason: Annotated[
        str,
        Doc(
            "why: e.g. 'crash loop: instance 0 failed to start 3 times (…)' or the "
            "engine's refusal to start an instance, with status errored"
        ),
    ]
    intent: Annotated[str, Doc(enum=[i.value for i in Intent])]
    created_at: Timestamp
    updated_at: Timestamp
    spec: Annotated[dict[str, Any], Ref("DeploymentSpec")]
    stable_revision: Annotated[int | None, Doc("the last revision that finished rolling out")]
    urls: list[Uri]
    instances: NotRequired[Annotated[list[InstanceJson], Doc("present on GET (list and single)")]]
    replicas: Annotated[
        int, Doc("instances it runs: the autoscaler's count within [min, max], else min")
    ]
    estimated_cost: CostJson
    capacity: NotRequired[Annotated[CapacityJson, Doc("on create, update and GET of one")]]
    kept_volumes: NotRequired[
        Annotated[
            list[str],
            Doc("on delete: the Docker volumes kept (none with ?delete_volumes=true)"),
        ]
    ]


class DeploymentListJson(TypedDict):
    deployments: list[DeploymentJson]
    next: NotRequired[
        Annotated[
            str | None,
            Doc("paged requests only: the after of the next page, null at the end"),
        ]
    ]


class DryRunJson(TypedDict):
    dry_run: bool
    name: str
    spec: Annotated[dict[str, Any], Ref("DeploymentSpec")]
    urls: list[Uri]
    estimated_cost: CostJson
    capacity: Annotated[CapacityJson, Doc("at scale.max next to the other deployments")]


class InstanceListJson(TypedDict):
    instances: list[InstanceJson]


class EventJson(TypedDict):
    id: Annotated[int, Doc("increasing; use as ?after=")]
    at: Timestamp
    kind: Annotated[str, Doc(example="status")]
    message: str
    revision: int | None


class EventListJson(TypedDict):
    events: list[EventJson]


# --- releases --------------------------------------------------------------


class HistoryEntryJson(TypedDict):
    revision: int
    digest: Annotated[
        str | None, Doc("registry manifest digest (sha256:…) the revision runs, if any")
    ]
    digest_ref: Annotated[
        str | None, Doc("repo@sha256:… pullable reference (what a revert re-pulls by)")
    ]
    image_id: Annotated[str | None, Doc("local image id")]
    image: str
    tag: str
    how: Annotated[
        str,
        Doc(
            "how the revision came by its image; settings: the previous one's",
            enum=[o.value for o in Origin],
        ),
    ]
    release: Annotated[bool, Doc("false for settings-only revisions")]
    changes: Annotated[
        list[str],
        Doc(
            "what changed since the next older entry, in words (names, never "
            "env or file values); empty for the oldest"
        ),
    ]
    state: Annotated[
        str,
        Doc(
            "pending: the target revision, not rolled out yet",
            enum=[s.value for s in RevisionState],
        ),
    ]
    reason: str
    created_at: Timestamp
    deployed_at: Timestamp | None


class HistoryJson(TypedDict):
    history: list[HistoryEntryJson]


class RedeployJson(TypedDict):
    changed: bool
    digest: str | None
    image_id: Annotated[str | None, Doc("null when known by digest only (pulled at rollout)")]
    message: str
    warning: str | None


class _RedeployPart(TypedDict):
    redeploy: RedeployJson


class RedeployedJson(DeploymentJson, _RedeployPart):
    """A deployment with what the redeploy found (the schema: Deployment and this part)."""


# --- secrets ---------------------------------------------------------------


class SecretJson(TypedDict):
    """A secret, never its value. Below the write scope only the name: the rest is metadata too."""

    name: str
    version: NotRequired[Annotated[int, Doc("grows on every PUT")]]
    created_at: NotRequired[Timestamp]
    updated_at: NotRequired[Timestamp]
    used_by: NotRequired[list[str]]


class SecretListJson(TypedDict):
    secrets: list[SecretJson]


# --- managed URLs and certificates -----------------------------------------


class UrlTlsJson(TypedDict):
    status: TlsStatus
    error: Annotated[str, Doc("the last failure, if any")]
    expires_at: Timestamp | None
    issuer: Issuer


class UrlJson(UrlSpecJson):
    id: str
    url: Uri
    created_at: Timestamp
    updated_at: Timestamp
    tls: UrlTlsJson


class UrlListJson(TypedDict):
    urls: list[UrlJson]


class CertificateJson(TypedDict):
    """One hostname's certificate and its issuing bookkeeping (no keys)."""

    domain: str
    status: TlsStatus
    issuer: Issuer
    serial: Annotated[str, Doc("hex")]
    not_before: Timestamp | None
    not_after: Timestamp | None
    renew_at: Timestamp | None
    error: str
    failures: Annotated[int, Doc("failed attempts in a row")]
    next_attempt_at: Timestamp | None
    attempts: int
    orders_last_hour: int
    orders_total: int
    renewals: int
    alert: Annotated[bool, Doc("within 7 days of expiry and renewal keeps failing")]


class CertificateListJson(TypedDict):
    certificates: list[CertificateJson]


# --- the node: health, firewall, registry, volumes -------------------------


class HealthJson(TypedDict):
    status: Literal["ok", "degraded"]
    version: str
    problems: Annotated[
        list[str], Doc("e.g. the proxy listeners are closed: the firewall is not loaded")
    ]


class PacketsJson(TypedDict):
    packets: int
    bytes: int


class FirewallJson(TypedDict):
    """patrd's nftables table (README: Security)."""

    enabled: Annotated[bool, Doc("firewall.enabled")]
    applied: Annotated[bool, Doc("the kernel holds exactly this ruleset now")]
    ruleset: Annotated[
        str,
        Doc("table inet patrd as loaded with nft -f (when disabled: what would be loaded)"),
    ]
    counters: Annotated[
        dict[str, PacketsJson],
        Doc(
            "named counters since the daemon started: rate_limited, conn_limited, "
            "api_denied, container_denied, isolation_denied, invalid, input_default"
        ),
    ]
    error: Annotated[str | None, Doc("why the last load or check failed")]
    applied_at: Timestamp | None
    loads: Annotated[int, Doc("loads since the daemon started")]


class RegistryLoginJson(TypedDict):
    """How to log Docker in to the node registry (README: Security)."""

    registry: Annotated[str, Doc("host:port to push to")]
    auth: Annotated[Literal["generated", "htpasswd_file", "none"], Doc("who holds the credential")]
    username: str | None
    password_file: Annotated[
        str | None, Doc("0600 file with the password (never the password itself)")
    ]
    login: Annotated[str | None, Doc("a shell line")]


class PushResultJson(TypedDict):
    pushes: Annotated[int, Doc("manifest pushes with a tag")]
    rollouts: list[str]


class VolumeJson(TypedDict):
    name: str
    volume: Annotated[str, Doc("the Docker volume")]
    instance: int
    path: str
    size_gb: int
    used_bytes: int


class VolumeListJson(TypedDict):
    volumes: list[VolumeJson]


class DeletedJson(TypedDict):
    deleted: str


# The document's component name of each view.
VIEWS: dict[str, type] = {
    "Deployment": DeploymentJson,
    "DeploymentList": DeploymentListJson,
    "DryRun": DryRunJson,
    "Instance": InstanceJson,
    "InstanceList": InstanceListJson,
    "Event": EventJson,
    "EventList": EventListJson,
    "HistoryEntry": HistoryEntryJson,
    "History": HistoryJson,
    "Secret": SecretJson,
    "SecretList": SecretListJson,
    "Url": UrlJson,
    "UrlTls": UrlTlsJson,
    "UrlList": UrlListJson,
    "Certificate": CertificateJson,
    "CertificateList": CertificateListJson,
    "Health": HealthJson,
    "Firewall": FirewallJson,
    "RegistryLogin": RegistryLoginJson,
    "PushResult": PushResultJson,
    "VolumeList": VolumeListJson,
    "Deleted": DeletedJson,
}
_NAMES = {view: name for name, view in VIEWS.items()}


def view_schemas() -> dict[str, Schema]:
    """The views' OpenAPI schemas by component name (a view in another is a ``$ref``)."""
    out = {name: schema_of(view, _NAMES) for name, view in VIEWS.items()}
    out["Redeployed"] = {
        "allOf": [
            {"$ref": "#/components/schemas/Deployment"},
            object_schema(_RedeployPart, _NAMES),
        ]
    }
    return out


def url_request_schemas() -> dict[str, Schema]:
    """``CreateUrl`` and ``UpdateUrl``: a URL's fields, closed; a patch requires none."""
    return {
        "CreateUrl": object_schema(UrlSpecJson, required=("domain", "target"), closed=True),
        "UpdateUrl": {
            **object_schema(UrlSpecJson, required=(), closed=True),
            "description": "Partial update: given fields replace the current ones.",
        },
    }
