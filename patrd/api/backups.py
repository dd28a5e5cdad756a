"""``POST /v1/backup`` (the state archive) and ``/v1/backups``: off-site backups
(patrd/state/offsite.py) — list, run now, restore, jobs.

Runs and restores are jobs: ``POST`` answers 202 with the job, which
``GET /v1/backups/jobs/{id}`` shows until it is ``ok`` or ``failed``. Two
things are served on the unix socket only (403 over TCP), as ``POST
/v1/backup`` is: the state archive (it holds the secrets key) and a restore
into a host directory (``target``: the daemon writes there as root).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from patrd.api.context import CONFIG
from patrd.api.errors import error_response
from patrd.model.errors import BadRequest, ConfigError, Conflict, NotFound, PatrdError, SpecError
from patrd.state import archive as backup
from patrd.state.offsite import STATE_FILE, OffsiteBackups
from patrd.state.offsite_restore import RestoreRequest, choose_state, start_restore
from patrd.state.restic import ResticError, Snapshot, redact

BACKUPS = web.AppKey("patrd.backups", OffsiteBackups)
CHUNK = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/backup", create_backup, name="create_backup")
    r.add_get("/v1/backups", list_backups, name="list_backups", allow_head=False)
    r.add_post("/v1/backups", run_backup, name="run_backup")
    r.add_get("/v1/backups/jobs/{id}", get_job, name="get_backup_job", allow_head=False)
    r.add_post("/v1/backups/{id}/restore", restore_backup, name="restore_backup")
    r.add_get("/v1/backups/{id}/state", backup_state, name="backup_state", allow_head=False)


async def create_backup(request: web.Request) -> web.StreamResponse:
    """A consistent snapshot of the data dir as a tar (patrd/state/archive.py), streamed back.

    Only on the unix socket: the tar holds the secrets key, so a TCP bearer
    token (meant for deploying) must not be enough to take it away.
    """
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


def _service(request: web.Request) -> OffsiteBackups:
    service = request.app.get(BACKUPS)
    if service is None or not service.config.enabled:
        raise Conflict("off-site backups are not configured: set [backup] repository")
    return service


def _unix_only(request: web.Request, what: str) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if getattr(sock, "family", None) != socket.AF_UNIX:
        raise web.HTTPForbidden(
            text=f"{what} is served on the unix socket only (run it on the host)"
        )


def _unavailable(exc: PatrdError) -> web.Response:
    return error_response(503, "backup_unavailable", f"backup repository: {exc}")


async def list_backups(request: web.Request) -> web.Response:
    """The configuration, schedule, recent jobs and the runs in the repository."""
    service = request.app.get(BACKUPS)
    if service is None or not service.config.enabled:
        return web.json_response({"configured": False, "runs": [], "jobs": []})
    config, stats = service.config, service.stats
    body: dict[str, Any] = {
        "configured": True,
        "repository": redact(config.repository),
        "schedule": str(config.schedule) if config.schedule else None,
        "next_run_at": service.next_run_at(),
        "last_run_at": stats.last_run_at,
        "last_success_at": stats.last_success_at,
        "busy": service.busy,
        "jobs": [j.to_json() for j in service.jobs()],
        "error": None,
    }
    try:
        body["runs"] = runs_json(await service.snapshots())
    except PatrdError as exc:  # restic failed, or the env_file is unreadable
        body["runs"], body["error"] = [], str(exc)
    return web.json_response(body)


def runs_json(snapshots: list[Snapshot]) -> list[dict[str, Any]]:
    """Snapshots grouped by their ``run`` tag, newest run first."""
    runs: dict[str, list[Snapshot]] = {}
    for s in snapshots:
        runs.setdefault(s.tags.get("run") or s.short_id, []).append(s)
    items = [
        {
            "id": run,
            "time": min(s.time for s in group),
            "state": any(s.kind == "state" for s in group),
            "deployments": sorted({d for s in group if (d := s.tags.get("deployment"))}),
            "snapshots": [s.to_json() for s in group],
        }
        for run, group in runs.items()
    ]
    return sorted(items, key=lambda r: r["time"], reverse=True)


async def run_backup(request: web.Request) -> web.Response:
    job = _service(request).start_backup()
    return web.json_response(job.to_json(), status=202)


async def get_job(request: web.Request) -> web.Response:
    service = _service(request)
    job = service.job(request.match_info["id"])
    if job is None:
        raise NotFound(f"no backup job {request.match_info['id']!r} (jobs are kept in memory)")
    return web.json_response(job.to_json())


async def restore_backup(request: web.Request) -> web.Response:
    """Body ``{"deployment": NAME, "volume"?: V, "target"?: "/abs/dir"}``; 202 with the job."""
    service = _service(request)
    body = await _json_object(request)
    unknown = set(body) - {"deployment", "volume", "target"}
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown field; allowed: deployment, target, volume")
    deployment = body.get("deployment")
    if not isinstance(deployment, str) or not deployment:
        raise SpecError(
            "deployment",
            "is required (patrd's state is restored offline: GET /v1/backups/{id}/state, "
            "then patrd restore FILE)",
        )
    volume = body.get("volume")
    if volume is not None and not isinstance(volume, str):
        raise SpecError("volume", "must be a volume name")
    target = body.get("target")
    if target is not None:
        if not isinstance(target, str) or not target:
            raise SpecError("target", "must be an absolute directory path")
        _unix_only(request, "a restore into a host directory")
    restore = RestoreRequest(
        snapshot=request.match_info["id"],
        deployment=deployment,
        volume=volume,
        target=Path(target) if target else None,
    )
    try:
        job = await start_restore(service, restore)
    except (ResticError, ConfigError) as exc:
        return _unavailable(exc)
    return web.json_response(job.to_json(), status=202)


async def backup_state(request: web.Request) -> web.StreamResponse:
    """The state archive of a run (the tar ``patrd restore FILE`` takes), streamed."""
    _unix_only(request, "the state archive (it holds secrets)")
    service = _service(request)
    try:
        restic = service.restic()
        chosen = choose_state(await restic.snapshots(), request.match_info["id"])
        tmp = service.paths.data_dir / ".backup-tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        dest = tmp / f"restic-{chosen.short_id}.tar"
        await restic.dump(chosen.id, STATE_FILE, dest)
    except (ResticError, ConfigError) as exc:
        return _unavailable(exc)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-tar",
                "Content-Disposition": f'attachment; filename="patrd-{chosen.short_id}.tar"',
            }
        )
        response.content_length = dest.stat().st_size
        await response.prepare(request)
        with dest.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        dest.unlink(missing_ok=True)


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SpecError("body", "must be a JSON object")
    return body
