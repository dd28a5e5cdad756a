"""``/v1/deployments``: list, create (and ``?dry_run``), show, update, delete, start, stop,
instances, events, history and revert by digest.

Handlers parse the request, call the store and wake the controller. They raise
``patrd.model.errors`` classes; ``patrd.api.errors`` turns them into responses.
Bodies are parsed to specs by ``patrd.model.spec`` (the one validator);
nothing here re-checks fields. The JSON shapes are ``patrd/api/shapes.py``.
"""

from __future__ import annotations

from aiohttp import web

from patrd.api import capacity, image_ports
from patrd.api.context import bool_query, parts, read_json, uint_query
from patrd.api.shapes import (
    deployment_json,
    deployment_urls,
    event_json,
    history_json,
    instance_json,
)
from patrd.api.volumes import kept_volume_names, refuse_volume_loss
from patrd.engine import cap_policy
from patrd.model import spec
from patrd.model.contract import EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT
from patrd.model.deployment import Intent
from patrd.model.errors import BadRequest, Conflict, NotFound, SpecError
from patrd.model.replicas import effective_replicas
from patrd.model.revision_changes import spec_changes
from patrd.model.view_shapes import (
    DeploymentListJson,
    DryRunJson,
    EventListJson,
    HistoryJson,
    InstanceListJson,
)
from patrd.observe import cost
from patrd.settings.config import Config
from patrd.state.store import Store

LIST_MAX_LIMIT = 500  # deployments per page of GET /v1/deployments?limit=


def add_routes(app: web.Application) -> None:
    r = app.router
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


# --- handlers -------------------------------------------------------------


async def list_deployments(request: web.Request) -> web.Response:
    """All deployments by name; ``?limit=N[&after=NAME]``: one page and the ``next`` cursor."""
    store, controller, config = parts(request)
    paged = "limit" in request.query or "after" in request.query
    limit = uint_query(request, "limit", default=LIST_MAX_LIMIT)
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {LIST_MAX_LIMIT}", field="limit")
    after = request.query.get("after")
    if not paged:
        records = await store.list_deployments()
    else:
        records = await store.list_deployments(after=after, limit=limit + 1)
    body: DeploymentListJson = {
        "deployments": [
            deployment_json(rec, config, instances=controller.instances(rec.id))
            for rec in records[:limit]
        ]
    }
    if paged:
        body["next"] = records[limit - 1].name if len(records) > limit else None
    return web.json_response(body)


async def create_deployment(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
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
    if bool_query(request, "dry_run"):
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


async def _dry_run(store: Store, config: Config, parsed: spec.DeploymentSpec) -> DryRunJson:
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
    store, controller, config = parts(request)
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
    store, controller, config = parts(request)
    name = request.match_info["name"]
    body = await read_json(request)
    confirmed = bool_query(request, "confirm_volume_loss")

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
    store, controller, config = parts(request)
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
    delete_volumes = bool_query(request, "delete_volumes")
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
    store, controller, _ = parts(request)
    record = await store.get_deployment(request.match_info["name"])
    body: InstanceListJson = {
        "instances": [instance_json(i) for i in controller.instances(record.id)]
    }
    return web.json_response(body)


async def list_events(request: web.Request) -> web.Response:
    store, _, _ = parts(request)
    after = uint_query(request, "after", default=0)
    limit = uint_query(request, "limit", default=EVENTS_DEFAULT_LIMIT)
    if not 1 <= limit <= EVENTS_MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {EVENTS_MAX_LIMIT}", field="limit")
    record = await store.get_deployment(request.match_info["name"])
    events = await store.list_events(record.id, after_id=after, limit=limit)
    body: EventListJson = {"events": [event_json(e) for e in events]}
    return web.json_response(body)


async def list_history(request: web.Request) -> web.Response:
    store, _, _ = parts(request)
    record = await store.get_deployment(request.match_info["name"])
    history = await store.history(record.id)
    specs = [h.spec.to_json() for h in history]  # newest first: the next one is the older
    body: HistoryJson = {
        "history": [
            history_json(h, spec_changes(specs[i + 1] if i + 1 < len(specs) else None, specs[i]))
            for i, h in enumerate(history)
        ]
    }
    return web.json_response(body)


async def revert_deployment(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
    # Any REF patrd/model/releases.py accepts (a revision number, a digest, an image id prefix).
    record = await store.revert(request.match_info["name"], request.match_info["digest"])
    controller.wake(record.id)
    return web.json_response(deployment_json(record, config), status=202)


async def _set_intent(request: web.Request, intent: Intent) -> web.Response:
    store, controller, config = parts(request)
    record = await store.set_intent(request.match_info["name"], intent)
    controller.wake(record.id)
    return web.json_response(deployment_json(record, config), status=202)
