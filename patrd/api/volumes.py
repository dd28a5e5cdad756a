"""Volumes and config files of a deployment, as the API shows and edits them."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from patrd.api.context import CONFIG, CONTROLLER, STORE
from patrd.api.shapes import deployment_json
from patrd.model import spec
from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import Conflict, NotFound
from patrd.model.naming import volume_name, volume_names, volume_of
from patrd.model.replicas import volume_slots
from patrd.model.view_shapes import VolumeJson, VolumeListJson

MAX_CONFIG_BODY = spec.MAX_CONFIG_FILE_BYTES


def refuse_volume_loss(
    current: spec.DeploymentSpec, updated: spec.DeploymentSpec, *, confirmed: bool
) -> None:
    """Scaling a deployment with volumes down deletes data: only when asked explicitly."""
    if not current.volumes or updated.scale.min >= current.scale.min or confirmed:
        return
    lost = [
        volume_name(current.name, v.name, slot)
        for slot in range(updated.scale.min, current.scale.min)
        for v in current.volumes
    ]
    raise Conflict(
        f"scaling {current.name} from {current.scale.min} to {updated.scale.min} instances "
        f"deletes the volumes {', '.join(lost)} and their data; repeat with "
        "?confirm_volume_loss=true to do it"
    )


def kept_volume_names(record: DeploymentRecord) -> list[str]:
    slots = range(volume_slots(record))
    return volume_names(record.name, [v.name for v in record.spec.volumes], slots)


async def get_config_file(request: web.Request) -> web.Response:
    record = await request.app[STORE].get_deployment(request.match_info["name"])
    wanted = request.match_info["file"]
    for name, content in record.spec.config_mounts:
        if name == wanted:
            return web.Response(body=content, content_type="application/octet-stream")
    raise NotFound(f"config file {wanted!r} not found in {record.name}")


async def put_config_file(request: web.Request) -> web.Response:
    """The raw body is the file; it replaces the file in running containers, no restart."""
    file_name = spec.config_file_name(request.match_info["file"], "file")
    content = await request.read()

    def change(current: spec.DeploymentSpec) -> spec.DeploymentSpec:
        files = dict(current.config_mounts)
        files[file_name] = content
        return _with_files(current, files)

    record = await request.app[STORE].update_spec(request.match_info["name"], change)
    request.app[CONTROLLER].wake(record.id)
    return web.json_response(deployment_json(record, request.app[CONFIG]))


async def delete_config_file(request: web.Request) -> web.Response:
    file_name = request.match_info["file"]

    def change(current: spec.DeploymentSpec) -> spec.DeploymentSpec:
        files = dict(current.config_mounts)
        if file_name not in files:
            raise NotFound(f"config file {file_name!r} not found in {current.name}")
        del files[file_name]
        return _with_files(current, files)

    record = await request.app[STORE].update_spec(request.match_info["name"], change)
    request.app[CONTROLLER].wake(record.id)
    return web.json_response(deployment_json(record, request.app[CONFIG]))


def _with_files(current: spec.DeploymentSpec, files: dict[str, bytes]) -> spec.DeploymentSpec:
    body = {"config_mounts": {k: base64.b64encode(v).decode() for k, v in files.items()}}
    return spec.parse_update(current, body)


def volume_json(record: DeploymentRecord) -> list[dict[str, Any]]:
    return [{"name": v.name, "path": v.path, "size_gb": v.size_gb} for v in record.spec.volumes]


async def list_volumes(request: web.Request) -> web.Response:
    """Per instance: the Docker volume, its mount path, recorded size and bytes used."""
    record = await request.app[STORE].get_deployment(request.match_info["name"])
    usage = await request.app[CONTROLLER].volume_usage(record.name)
    items: list[VolumeJson] = []
    names = [v.name for v in record.spec.volumes]
    for v in record.spec.volumes:
        for docker_name, (slot, used) in sorted(usage.items()):
            if volume_of(docker_name, record.name, names) == v.name:
                items.append(
                    {
                        "name": v.name,
                        "volume": docker_name,
                        "instance": slot,
                        "path": v.path,
                        "size_gb": v.size_gb,
                        "used_bytes": used,
                    }
                )
    body: VolumeListJson = {"volumes": items}
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/deployments/{name}/volumes", list_volumes, name="list_volumes", allow_head=False)
    r.add_get(
        "/v1/deployments/{name}/config/{file}",
        get_config_file,
        name="get_config_file",
        allow_head=False,
    )
    r.add_put("/v1/deployments/{name}/config/{file}", put_config_file, name="put_config_file")
    r.add_delete(
        "/v1/deployments/{name}/config/{file}", delete_config_file, name="delete_config_file"
    )
