"""Routes of ``exec``, one-off ``run`` and scheduled jobs (registered by patrd/api/app.py)."""

from __future__ import annotations

from aiohttp import web

from patrd.api import exec as exec_api
from patrd.api import jobs as jobs_api

# Routes that run code inside a deployment's containers: the token scopes
# should ask ``write`` (or a dedicated ``exec``) for these. ``attach_exec`` is
# a GET (a WebSocket) but carries stdin into the container: it needs the same
# scope, even though the exec it attaches was created by an audited POST.
EXEC_ROUTES = frozenset({"create_exec", "attach_exec", "run_oneoff", "run_job_now"})


def add_routes(app: web.Application) -> None:
    r = app.router
    base = "/v1/deployments/{name}"
    r.add_post(f"{base}/exec", exec_api.create_exec, name="create_exec")
    r.add_get(
        f"{base}/exec/{{id}}/attach", exec_api.attach_exec, name="attach_exec", allow_head=False
    )
    r.add_post(f"{base}/run", exec_api.run_oneoff, name="run_oneoff")
    r.add_get(f"{base}/jobs", jobs_api.list_jobs, name="list_jobs", allow_head=False)
    r.add_post(f"{base}/jobs/{{job}}/run", jobs_api.run_job_now, name="run_job_now")
    r.add_get(
        f"{base}/jobs/{{job}}/runs", jobs_api.list_job_runs, name="list_job_runs", allow_head=False
    )
    r.add_get(
        f"{base}/jobs/{{job}}/runs/{{id}}",
        jobs_api.get_job_run,
        name="get_job_run",
        allow_head=False,
    )
