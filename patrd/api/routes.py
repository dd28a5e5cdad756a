"""Request handlers: parse the request, call the store, wake the controller.

Handlers raise ``patrd.model.errors`` classes; ``patrd.api.errors`` turns them into
responses. Bodies are parsed to specs by ``patrd.model.spec`` (the one validator);
nothing here re-checks fields.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web

from patrd import __version__
from patrd.api import backups as offsite_backups
from patrd.api import capacity, image_ports, secrets, volumes
from patrd.api.firewall import firewall_status
from patrd.api.observe import deployment_logs, deployment_metrics, prometheus_metrics
from patrd.api.openapi import OPENAPI
from patrd.api.registry_hook import registry_events, registry_login
from patrd.api.run_routes import add_run_routes
from patrd.api.urls import (
    create_url,
    delete_url,
    get_url,
    list_certificates,
    list_urls,
    update_url,
)
from patrd.api.volumes import kept_volume_names, refuse_volume_loss
from patrd.control.autoscale import effective_replicas
from patrd.engine import cap_policy
from patrd.model import spec
from patrd.model.contract import EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT
from patrd.model.errors import BadRequest, Conflict, NotFound, SpecError
from patrd.model.releases import digest_of
from patrd.model.revision_changes import spec_changes
from patrd.model.views import ControllerView, InstanceView
from patrd.observe import cost
from patrd.settings.config import Config
from patrd.state.store import DeploymentRecord, EventRecord, Intent, RevisionRecord, Store

STORE = web.AppKey("patrd.state.store", Store)
CONTROLLER = web.AppKey[ControllerView]("patrd.control.executor")
CONFIG = web.AppKey("patrd.settings.config", Config)
# Why the proxy listeners are closed (patrd/firewall/fence_gate.py), None while open.
PROXY_CLOSED = web.AppKey[Callable[[], str | None]]("patrd.proxy_closed")

LIST_MAX_LIMIT = 500  # deployments per page of GET /v1/deployments?limit=
_UINT_RE = re.compile(r"[0-9]{1,18}")


def add_routes(app: web.Application) -> None:
    """Every route the API serves; the OpenAPI document lists exactly these."""
    r = app.router
    r.add_get("/v1/health", health, name="health", allow_head=False)
    r.add_get("/v1/openapi.json", openapi_document, name="openapi", allow_head=False)
    r.add_get("/v1/firewall", firewall_status, name="firewall", allow_head=False)
    r.add_get(
        "/v1/deployments/{name}/volumes",
        volumes.list_volumes,
        name="list_volumes",
        allow_head=False,
    )
    r.add_get(
        "/v1/deployments/{name}/config/{file}",
        volumes.get_config_file,
        name="get_config_file",
        allow_head=False,
    )
    r.add_put(
        "/v1/deployments/{name}/config/{file}", volumes.put_config_file, name="put_config_file"
    )
    r.add_delete(
        "/v1/deployments/{name}/config/{file}",
        volumes.delete_config_file,
        name="delete_config_file",
    )
    r.add_post("/v1/registry/events", registry_events, name="registry_events")
    r.add_get("/v1/registry/login", registry_login, name="registry_login", allow_head=False)
    r.add_get("/v1/secrets", secrets.list_secrets, name="list_secrets", allow_head=False)
    r.add_post("/v1/secrets", secrets.create_secret, name="create_secret")
    r.add_get("/v1/secrets/{name}", secrets.get_secret, name="get_secret", allow_head=False)
    r.add_put("/v1/secrets/{name}", secrets.put_secret, name="put_secret")
    r.add_delete("/v1/secrets/{name}", secrets.delete_secret, name="delete_secret")
    r.add_post("/v1/backup", create_backup, name="create_backup")
    offsite_backups.add_routes(r)  # /v1/backups: off-site backups (patrd/state/offsite.py)
    r.add_get("/v1/urls", list_urls, name="list_urls", allow_head=False)
    r.add_post("/v1/urls", create_url, name="create_url")
    r.add_get("/v1/urls/{id}", get_url, name="get_url", allow_head=False)
    r.add_patch("/v1/urls/{id}", update_url, name="update_url")
    r.add_delete("/v1/urls/{id}", delete_url, name="delete_url")
    r.add_get("/v1/certificates", list_certificates, name="list_certificates", allow_head=False)
    r.add_get("/v1/deployments", list_deployments, name="list_deployments", allow_head=False)
    r.add_post("/v1/deployments", create_deployment, name="create_deployment")
    r.add_get("/v1/deployments/{name}", get_deployment, name="get_deployment", allow_head=False)
    r.add_patch("/v1/deployments/{name}", update_deployment, name="update_deployment")
    r.add_delete("/v1/deployments/{name}", delete_deployment, name="delete_deployment")
    r.add_post("/v1/deployments/{name}/start", start_deployment, name="start_deployment")
    r.add_post("/v1/deployments/{name}/stop", stop_deployment, name="stop_deployment")
    r.add_get(
        "/v1/deployments/{name}/instances",
        list_instances,
        name="list_instances",
        allow_head=False,
    )
    r.add_get("/v1/deployments/{name}/events", list_events, name="list_events", allow_head=False)
    r.add_get("/v1/deployments/{name}/history", list_history, name="list_history", allow_head=False)
    r.add_post(
        "/v1/deployments/{name}/history/{digest}/revert",
        revert_deployment,
        name="revert_deployment",
    )
    # Logs, metrics, Prometheus (issue 7; patrd/api/observe.py).
    r.add_get("/v1/deployments/{name}/logs", deployment_logs, name="logs", allow_head=False)
    r.add_get(
        "/v1/deployments/{name}/metrics", deployment_metrics, name="metrics", allow_head=False
    )
    r.add_get("/metrics", prometheus_metrics, name="prometheus", allow_head=False)
    add_run_routes(app)  # exec, one-off run, scheduled jobs (patrd/api/run_routes.py)


# --- handlers -------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """200 while the API answers; ``degraded`` with the reasons when something is fenced off."""
    problems = []
    closed = request.app.get(PROXY_CLOSED)
    reason = closed() if closed is not None else None
    if reason:
        problems.append(reason)
    return web.json_response(
        {"status": "degraded" if problems else "ok", "version": __version__, "problems": problems}
    )


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def create_backup(request: web.Request) -> web.StreamResponse:
    """A consistent snapshot of the data dir as a tar (patrd/state/archive.py), streamed back.

    Only on the unix socket: the tar holds the secrets key, so a TCP bearer
    token (meant for deploying) must not be enough to take it away.
    """
    from patrd.state import archive as backup  # the daemon's side only; keeps this module light

    sock = request.transport.get_extra_info("socket") if request.transport else None
    if getattr(sock, "family", None) != socket.AF_UNIX:
        raise web.HTTPForbidden(
            text="backups hold secrets and are served on the unix socket only "
            "(run patrctl backup on the host)"
        )
    config = request.app[CONFIG]
    archive, manifest = await backup.create_backup(
        config.daemon.data_dir, config.daemon.database, config.daemon.secrets_key
    )
    try:
        stamp = datetime.fromtimestamp(manifest.created_at, UTC).strftime("%Y%m%dT%H%M%SZ")
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-tar",
                "Content-Disposition": f'attachment; filename="patrd-backup-{stamp}.tar"',
                "X-Patrd-Warning": backup.SECRETS_WARNING,
            }
        )
        response.content_length = archive.stat().st_size
        await response.prepare(request)
        with archive.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, backup.CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        archive.unlink(missing_ok=True)


async def list_deployments(request: web.Request) -> web.Response:
    """All deployments by name; ``?limit=N[&after=NAME]``: one page and the ``next`` cursor."""
    store, controller, config = _parts(request)
    paged = "limit" in request.query or "after" in request.query
    limit = _uint_query(request, "limit", default=LIST_MAX_LIMIT)
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {LIST_MAX_LIMIT}", field="limit")
    after = request.query.get("after")
    if not paged:
        records = await store.list_deployments()
    else:
        records = await store.list_deployments(after=after, limit=limit + 1)
    body: dict[str, Any] = {
        "deployments": [
            deployment_json(rec, config, instances=controller.instances(rec.id))
            for rec in records[:limit]
        ]
    }
    if paged:
        body["next"] = records[limit - 1].name if len(records) > limit else None
    return web.json_response(body)


async def create_deployment(request: web.Request) -> web.Response:
    store, controller, config = _parts(request)
    body = await image_ports.fill_ports(
        request,
        await read_json(request),
        lambda b: spec.parse_create(b, region=config.daemon.region).image_ref_via(
            config.registry.host
        ),
    )
    parsed = spec.parse_create(body, region=config.daemon.region)
    cap_policy.check(parsed.security, config.security, body=body)
    capacity.refuse_impossible(parsed)
    if _bool_query(request, "dry_run"):
        return web.json_response(await _dry_run(store, config, parsed))
    before = await capacity.others_load(store, controller, None)
    record = await store.create_deployment(parsed)
    controller.wake(record.id)
    return web.json_response(
        deployment_json(
            record,
            config,
            capacity=await capacity.capacity_json(store, controller, record, before=before),
        ),
        status=201,
        headers={"Location": f"/v1/deployments/{record.name}"},
    )


async def _dry_run(store: Store, config: Config, parsed: spec.DeploymentSpec) -> dict[str, Any]:
    """``?dry_run=true``: everything a create would check, nothing stored (the dashboard's
    form validates each step and shows the estimated cost with it)."""
    try:
        await store.get_deployment(parsed.name)
    except NotFound:
        pass
    else:
        raise Conflict(f"deployment {parsed.name!r} already exists")
    if parsed.secret_names:
        known = {s.name for s in await store.list_secrets()}
        for key, value in parsed.env:
            if isinstance(value, spec.SecretRef) and value.name not in known:
                raise SpecError(f"env.{key}.secret", f"secret {value.name!r} does not exist")
        auth = parsed.registry_auth
        if auth is not None and auth.name not in known:
            raise SpecError("registry_auth.secret", f"secret {auth.name!r} does not exist")
    others = [
        (r.spec, effective_replicas(r))
        for r in await store.list_deployments()
        if r.intent in (Intent.RUN, Intent.CREATED)
    ]
    return {
        "dry_run": True,
        "name": parsed.name,
        "spec": parsed.to_json(),
        "urls": deployment_urls(parsed, config),
        "estimated_cost": cost.estimate(parsed, config.cost).to_json(),
        "capacity": cost.capacity(parsed, others, capacity.this_node()).to_json(),
    }


async def get_deployment(request: web.Request) -> web.Response:
    store, controller, config = _parts(request)
    record = await store.get_deployment(request.match_info["name"])
    return web.json_response(
        deployment_json(
            record,
            config,
            instances=controller.instances(record.id),
            capacity=await capacity.capacity_json(store, controller, record),
        )
    )


async def update_deployment(request: web.Request) -> web.Response:
    store, controller, config = _parts(request)
    name = request.match_info["name"]
    body = await read_json(request)
    confirmed = _bool_query(request, "confirm_volume_loss")

    def change(current: spec.DeploymentSpec) -> spec.DeploymentSpec:
        updated = spec.parse_update(current, body)
        cap_policy.check(updated.security, config.security, before=current.security, body=body)
        refuse_volume_loss(current, updated, confirmed=confirmed)
        if updated.resources != current.resources:
            capacity.refuse_impossible(updated)
        return updated

    old = await store.get_deployment(name)
    before = await capacity.others_load(store, controller, old.id) + capacity.running_load(
        old.spec, controller, old.id
    )
    record = await store.update_spec(name, change)
    controller.wake(record.id)
    return web.json_response(
        deployment_json(
            record,
            config,
            capacity=await capacity.capacity_json(store, controller, record, before=before),
        )
    )


async def delete_deployment(request: web.Request) -> web.Response:
    store, controller, config = _parts(request)
    name = request.match_info["name"]
    confirm = request.query.get("confirm")
    if confirm is None:
        raise BadRequest(
            f"deleting is permanent; repeat the deployment name as ?confirm={name}",
            field="confirm",
        )
    if confirm != name:
        raise BadRequest(
            f"confirm {confirm!r} does not match the deployment name {name!r}",
            field="confirm",
        )
    delete_volumes = _bool_query(request, "delete_volumes")
    current = await store.get_deployment(name)
    # A second DELETE while the first is in progress is the same request.
    record = (
        current
        if current.intent is Intent.DELETE
        else await store.set_intent(name, Intent.DELETE, delete_volumes=delete_volumes)
    )
    controller.wake(record.id)
    body = deployment_json(record, config)
    body["kept_volumes"] = [] if record.delete_volumes else kept_volume_names(record)
    return web.json_response(body, status=202)


async def start_deployment(request: web.Request) -> web.Response:
    return await _set_intent(request, Intent.RUN)


async def stop_deployment(request: web.Request) -> web.Response:
    return await _set_intent(request, Intent.STOP)


async def list_instances(request: web.Request) -> web.Response:
    store, controller, _ = _parts(request)
    record = await store.get_deployment(request.match_info["name"])
    return web.json_response(
        {"instances": [instance_json(i) for i in controller.instances(record.id)]}
    )


async def list_events(request: web.Request) -> web.Response:
    store, _, _ = _parts(request)
    after = _uint_query(request, "after", default=0)
    limit = _uint_query(request, "limit", default=EVENTS_DEFAULT_LIMIT)
    if not 1 <= limit <= EVENTS_MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {EVENTS_MAX_LIMIT}", field="limit")
    record = await store.get_deployment(request.match_info["name"])
    events = await store.list_events(record.id, after_id=after, limit=limit)
    return web.json_response({"events": [event_json(e) for e in events]})


async def list_history(request: web.Request) -> web.Response:
    store, _, _ = _parts(request)
    record = await store.get_deployment(request.match_info["name"])
    history = await store.history(record.id)
    specs = [h.spec.to_json() for h in history]  # newest first: the next one is the older
    return web.json_response(
        {
            "history": [
                {
                    **history_json(h),
                    "changes": spec_changes(specs[i + 1] if i + 1 < len(specs) else None, specs[i]),
                }
                for i, h in enumerate(history)
            ]
        }
    )


async def revert_deployment(request: web.Request) -> web.Response:
    store, controller, config = _parts(request)
    # Any REF patrd/model/releases.py accepts (a revision number, a digest, an image id prefix).
    record = await store.revert(request.match_info["name"], request.match_info["digest"])
    controller.wake(record.id)
    return web.json_response(deployment_json(record, config), status=202)


# --- JSON shapes (the public contract; see openapi.py) ---------------------


def deployment_json(
    record: DeploymentRecord,
    config: Config,
    *,
    instances: list[InstanceView] | None = None,
    capacity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
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


def instance_json(instance: InstanceView) -> dict[str, Any]:
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
    }


def history_json(entry: RevisionRecord) -> dict[str, Any]:
    return {
        "revision": entry.revision,
        "digest": digest_of(entry.digest_ref),
        "digest_ref": entry.digest_ref,
        "image_id": entry.image_id,
        "image": entry.spec.image_ref,
        "tag": entry.spec.tag,
        "how": entry.origin,
        "release": entry.release,
        "state": entry.state.value,
        "reason": entry.reason,
        "created_at": rfc3339(entry.created_at),
        "deployed_at": None if entry.deployed_at is None else rfc3339(entry.deployed_at),
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": rfc3339(event.at),
        "kind": event.kind,
        "message": event.message,
        "revision": event.revision,
    }


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- request parsing ------------------------------------------------------


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 400 for anything that is not one JSON document.

    ``request.read()`` raises ``HTTPRequestEntityTooLarge`` (413) past the
    app's ``client_max_size``.
    """
    if request.content_type != "application/json":
        raise BadRequest(f"Content-Type must be application/json, not {request.content_type!r}")
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("a JSON request body is required")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None


def _reject_constant(name: str) -> NoReturn:
    raise BadRequest(f"request body is not valid JSON: {name} is not a JSON value")


def _uint_query(request: web.Request, key: str, *, default: int) -> int:
    values = request.query.getall(key, [])
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"{key} given more than once", field=key)
    if not _UINT_RE.fullmatch(values[0]):
        raise BadRequest(f"{key} must be a non-negative integer, not {values[0]!r}", field=key)
    return int(values[0])


async def _set_intent(request: web.Request, intent: Intent) -> web.Response:
    store, controller, config = _parts(request)
    record = await store.set_intent(request.match_info["name"], intent)
    controller.wake(record.id)
    return web.json_response(deployment_json(record, config), status=202)


def _parts(request: web.Request) -> tuple[Store, ControllerView, Config]:
    app = request.app
    return app[STORE], app[CONTROLLER], app[CONFIG]


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in {"true", "false", "1", "0", "yes", "no"}:
        raise BadRequest(f"{name} must be true or false", field=name)
    return raw in {"true", "1", "yes"}
