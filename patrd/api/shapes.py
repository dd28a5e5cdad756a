"""The views of deployments, instances, history entries and events, built from the records.

Each builder returns its view's TypedDict (patrd/model/view_shapes.py), the
declaration the OpenAPI document's schema is generated from: mypy holds the
two together.
"""

from __future__ import annotations

from patrd.api.context import rfc3339
from patrd.model import spec
from patrd.model.deployment import DeploymentRecord, RevisionRecord
from patrd.model.records import EventRecord
from patrd.model.releases import digest_of
from patrd.model.replicas import effective_replicas
from patrd.model.view_shapes import (
    CapacityJson,
    DeploymentJson,
    EventJson,
    HistoryEntryJson,
    InstanceJson,
)
from patrd.model.views import InstanceView
from patrd.observe import cost
from patrd.settings.config import Config


def deployment_json(
    record: DeploymentRecord,
    config: Config,
    *,
    instances: list[InstanceView] | None = None,
    capacity: CapacityJson | None = None,
) -> DeploymentJson:
    body: DeploymentJson = {
        "id": record.id,
        "name": record.name,
        "revision": record.revision,
        "status": record.status.value,
        "status_reason": record.status_reason,
        "intent": record.intent.value,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
        "spec": record.spec.to_json(),
        "stable_revision": record.stable_revision,
        "urls": deployment_urls(record.spec, config),
        "replicas": effective_replicas(record),
        "estimated_cost": cost.estimate(record.spec, config.cost).to_json(),
    }
    if capacity is not None:
        body["capacity"] = capacity
    if instances is not None:
        body["instances"] = [instance_json(i) for i in instances]
    return body


def deployment_urls(deployment: spec.DeploymentSpec, config: Config) -> list[str]:
    """``http://<port>-<name>.<base_domain>[:<proxy port>]`` per HTTP port."""
    listens = config.proxy.http_listen
    port = listens[0].port if listens else 80
    suffix = "" if port == 80 else f":{port}"
    domain = config.proxy.base_domain
    return [f"http://{p}-{deployment.name}.{domain}{suffix}" for p in deployment.http_ports]


def instance_json(instance: InstanceView) -> InstanceJson:
    return {
        "name": instance.name,
        "container_id": instance.container_id,
        "revision": instance.revision,
        "slot": instance.slot,
        "state": instance.state,
        "ready": instance.ready,
        "address": instance.address,
        "restarts": instance.restarts,
        "current": instance.current,
        "probe": {
            "phase": instance.probe,
            "last": instance.probe_detail,
            "liveness_failures": instance.liveness_failures,
        },
        "waiting_for": instance.waiting_for,
    }


def history_json(entry: RevisionRecord, changes: list[str]) -> HistoryEntryJson:
    """``changes``: what changed since the next older entry (none for the oldest)."""
    return {
        "revision": entry.revision,
        "digest": digest_of(entry.digest_ref),
        "digest_ref": entry.digest_ref,
        "image_id": entry.image_id,
        "image": entry.spec.image_ref,
        "tag": entry.spec.tag,
        "how": entry.origin,
        "release": entry.release,
        "changes": changes,
        "state": entry.state.value,
        "reason": entry.reason,
        "created_at": rfc3339(entry.created_at),
        "deployed_at": None if entry.deployed_at is None else rfc3339(entry.deployed_at),
    }


def event_json(event: EventRecord) -> EventJson:
    return {
        "id": event.id,
        "at": rfc3339(event.at),
        "kind": event.kind,
        "message": event.message,
        "revision": event.revision,
    }
