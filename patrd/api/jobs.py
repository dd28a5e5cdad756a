"""``/v1/deployments/{name}/jobs``: scheduled jobs, their runs and the runs' output.

* ``GET .../jobs``: each job with its schedule, next run (in the node's time
  zone), whether a run is going and the last run.
* ``POST .../jobs/{job}/run``: run it now (409 while a run of it is going).
* ``GET .../jobs/{job}/runs``: newest first (``limit``, default and max 50).
* ``GET .../jobs/{job}/runs/{id}``: one run and its kept output (JSON lines
  ``{"t", "stream", "line"}``, the newest 64 KiB).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from patrd.api.runs import rfc3339, runs_of
from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import BadRequest, NotFound
from patrd.model.records import JOB_RUNS_KEPT, JobRunRecord
from patrd.run.jobs import JobScheduler, JobView


def _scheduler(request: web.Request) -> JobScheduler:
    jobs = runs_of(request).jobs
    if jobs is None:
        raise web.HTTPServiceUnavailable(text="the job scheduler is not wired in this daemon")
    return jobs


def run_json(run: JobRunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "job": run.job,
        "trigger": run.trigger,
        "started_at": rfc3339(run.started_at),
        "ended_at": rfc3339(run.ended_at),
        "duration_s": None if run.ended_at is None else round(run.ended_at - run.started_at, 3),
        "exit_code": run.exit_code,
        "outcome": run.outcome,
        "message": run.message,
    }


def job_json(view: JobView) -> dict[str, Any]:
    return {
        "name": view.job.name,
        "schedule": view.job.schedule,
        "command": list(view.job.command),
        "timeout_s": view.job.timeout_s,
        "next_run": view.next_at.isoformat() if view.next_at is not None else None,
        "running": view.running,
        "last_run": run_json(view.last) if view.last is not None else None,
    }


def _job_of(record: DeploymentRecord, name: str) -> str:
    if not any(j.name == name for j in record.spec.jobs):
        raise NotFound(f"deployment {record.name!r} has no job {name!r}")
    return name


async def list_jobs(request: web.Request) -> web.Response:
    runs = runs_of(request)
    jobs = _scheduler(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    views = await jobs.views(record)
    return web.json_response({"time_zone": str(jobs.tz), "jobs": [job_json(v) for v in views]})


async def run_job_now(request: web.Request) -> web.Response:
    runs = runs_of(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    run = await _scheduler(request).run_now(record, request.match_info["job"])
    return web.json_response(run_json(run), status=202)


async def list_job_runs(request: web.Request) -> web.Response:
    runs = runs_of(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    job = _job_of(record, request.match_info["job"])
    text = request.query.get("limit", str(JOB_RUNS_KEPT))
    if not text.isdigit() or not 1 <= int(text) <= JOB_RUNS_KEPT:
        raise BadRequest(f"limit must be from 1 to {JOB_RUNS_KEPT}", field="limit")
    found = await runs.store.job_runs(record.id, job, int(text))
    return web.json_response({"runs": [run_json(r) for r in found]})


async def get_job_run(request: web.Request) -> web.Response:
    runs = runs_of(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    job = request.match_info["job"]
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:
        raise NotFound(f"job run {text!r} not found")
    run, log = await runs.store.job_run_log(record.id, int(text))
    if run.job != job:
        raise NotFound(f"job run {text} is not a run of {job!r}")
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    return web.json_response({**run_json(run), "log": lines})
