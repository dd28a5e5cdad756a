"""Logs, metrics history and Prometheus: ``patrd/observe/logs.py``, ``metrics.py``.

* ``GET /v1/deployments/{name}/logs``: JSON lines (``application/x-ndjson``),
  one object per log line, oldest first; ``format=text`` gives
  ``<time> <instance> <stream>: <line>``. With ``follow=true`` the response
  is chunked and stays open: first the tail, then new lines as they are
  written, new instances included, until the client disconnects or the
  deployment is deleted.
* ``GET /v1/deployments/{name}/metrics?range=hour|day|week|month``.
* ``GET /metrics``: the Prometheus text format.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from patrd.api.context import STORE, rfc3339
from patrd.control.autoscale import AutoscaleStats
from patrd.model.errors import BadRequest, NotFound
from patrd.model.naming import instance_name
from patrd.observe.history import RANGES, History, Point
from patrd.observe.logs import (
    DEFAULT_TAIL,
    MAX_TAIL,
    Follower,
    LogEngine,
    LogKeeper,
    LogLine,
    LogQuery,
    read_logs,
)
from patrd.observe.metrics import Sampler
from patrd.observe.prometheus import CONTENT_TYPE, Exposition


@dataclass
class Observability:
    """What the daemon wires in; an app without it answers 503 on these routes."""

    engine: LogEngine
    keeper: LogKeeper | None = None
    sampler: Sampler | None = None
    history: History | None = None
    exposition: Exposition | None = None
    autoscale_stats: AutoscaleStats | None = None


OBSERVE = web.AppKey("patrd.observe", Observability)


def _observability(request: web.Request) -> Observability:
    parts = request.app.get(OBSERVE)
    if parts is None:
        raise web.HTTPServiceUnavailable(text="logs and metrics are not wired in this daemon")
    return parts


async def deployment_logs(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    record = await store.get_deployment(request.match_info["name"])
    parts = _observability(request)
    follow = _bool(request, "follow")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "text"):
        raise BadRequest("format must be json or text", field="format")
    since = _time(request, "since")
    until = _time(request, "until")
    tail_text = request.query.get("tail")
    if tail_text is None:
        tail: int | None = DEFAULT_TAIL if since is None else MAX_TAIL
    elif tail_text == "all":
        tail = MAX_TAIL
    else:
        if not tail_text.isdigit():
            raise BadRequest(f"tail must be a number or all, not {tail_text!r}", field="tail")
        tail = min(int(tail_text), MAX_TAIL)
    instance = request.query.get("instance") or None
    query = LogQuery(tail=tail, since_ns=since, until_ns=until, instance=instance)

    start_ns = time.time_ns()
    instances = await parts.engine.list_instances(record.id)
    history = await read_logs(parts.engine, instances, query, parts.keeper, record.id)
    if instance is not None and not history:
        _refuse_unknown_instance(instance, record.name, instances)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson; charset=utf-8"
            if fmt == "json"
            else "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)

    def encode(line: LogLine) -> bytes:
        text = json.dumps(line.to_json(), ensure_ascii=False) if fmt == "json" else line.to_text()
        return (text + "\n").encode()

    batch = bytearray()
    for line in history:
        batch += encode(line)
        if len(batch) > 64 * 1024:
            await response.write(bytes(batch))
            batch.clear()
    if batch:
        await response.write(bytes(batch))
    if follow and until is None:
        after: dict[str, int] = {}
        for inst in instances:
            short = inst.container_id[:12]
            seen = [line.ts_ns for line in history if line.container == short]
            after[inst.container_id] = max(seen) if seen else start_ns

        async def alive() -> bool:
            return await store.get_by_id(record.id) is not None

        follower = Follower(parts.engine, record.id, query, after=after, alive=alive)
        with contextlib.suppress(ConnectionResetError):
            async for line in follower.lines():
                await response.write(encode(line))
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _refuse_unknown_instance(wanted: str, deployment: str, instances: list[Any]) -> None:
    """400 ``instance`` when it names no instance (nor kept logs of a removed one)."""
    query = LogQuery(instance=wanted)
    if any(query.wants(instance_name(i.deployment, i.slot), i.container_id) for i in instances):
        return
    names = sorted({instance_name(i.deployment, i.slot) for i in instances})
    known = f"its instances: {', '.join(names)}" if names else "it has no instances now"
    raise BadRequest(f"{deployment} has no instance {wanted!r}; {known}", field="instance")


async def deployment_metrics(request: web.Request) -> web.Response:
    store = request.app[STORE]
    record = await store.get_deployment(request.match_info["name"])
    parts = _observability(request)
    range_name = request.query.get("range", "hour")
    if range_name not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)}", field="range")
    instance = request.query.get("instance") or None
    step = RANGES[range_name][0] or (parts.sampler.interval_s if parts.sampler else 0)
    points: list[Point] = []
    if parts.history is not None:
        _, points = await parts.history.series(record.id, range_name, time.time(), instance)
    current = [
        {
            "instance": s.instance,
            "container": s.container_id[:12],
            "at": rfc3339(s.at),
            "cpu_cores": round(s.cpu_cores, 4),
            "cpu_allocation_cores": s.cpu_allocation,
            "cpu_usage": round(s.cpu_fraction, 4),
            "memory_bytes": s.memory_bytes,
            "memory_limit_bytes": s.memory_limit,
            "rx_bytes_per_s": _round(s.rx_bps),
            "tx_bytes_per_s": _round(s.tx_bps),
            "read_bytes_per_s": _round(s.read_bps),
            "write_bytes_per_s": _round(s.write_bps),
            "source": s.source,
        }
        for s in (parts.sampler.samples(record.id) if parts.sampler else [])
        if instance is None or instance in (s.instance, s.container_id[:12])
    ]
    return web.json_response(
        {
            "deployment": record.name,
            "range": range_name,
            "step_s": step,
            "instance": instance,
            "current": sorted(current, key=lambda c: str(c["instance"])),
            "points": [_point_json(p, rfc3339) for p in points],
        }
    )


async def prometheus_metrics(request: web.Request) -> web.Response:
    parts = _observability(request)
    if parts.exposition is None:
        raise NotFound("Prometheus metrics are not enabled")
    body = await parts.exposition.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _point_json(p: Point, rfc3339: Any) -> dict[str, Any]:
    return {
        "t": rfc3339(p.t),
        "instances": p.instances,
        "cpu_cores": round(p.cpu_cores, 4),
        "cpu_allocation_cores": round(p.cpu_allocation, 4),
        "cpu_usage": round(p.cpu_usage, 4),
        "cpu_peak_cores": round(p.cpu_peak_cores, 4),
        "memory_bytes": int(p.memory_bytes),
        "memory_peak_bytes": int(p.memory_peak_bytes),
        "memory_limit_bytes": None if p.memory_limit_bytes is None else int(p.memory_limit_bytes),
        "rx_bytes_per_s": _round(p.rx_bps),
        "tx_bytes_per_s": _round(p.tx_bps),
        "read_bytes_per_s": _round(p.read_bps),
        "write_bytes_per_s": _round(p.write_bps),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _bool(request: web.Request, key: str) -> bool:
    value = request.query.get(key, "false").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise BadRequest(f"{key} must be true or false", field=key)


def _time(request: web.Request, key: str) -> int | None:
    """RFC 3339 or unix seconds (fractions allowed) → nanoseconds."""
    value = request.query.get(key)
    if value is None or value == "":
        return None
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{key} must be RFC 3339 (2024-05-01T12:00:00Z) or unix seconds", field=key
        ) from None
    if moment.tzinfo is None:
        raise BadRequest(f"{key} needs a time zone (Z or +hh:mm)", field=key)
    return int(moment.timestamp() * 1e9)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/deployments/{name}/logs", deployment_logs, name="logs", allow_head=False)
    r.add_get(
        "/v1/deployments/{name}/metrics", deployment_metrics, name="metrics", allow_head=False
    )
    r.add_get("/metrics", prometheus_metrics, name="prometheus", allow_head=False)
