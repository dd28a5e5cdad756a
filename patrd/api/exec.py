"""``exec`` into a running instance and one-off ``run`` s of a deployment.

* ``POST /v1/deployments/{name}/exec`` ``{"command": [...], "instance": "web-1",
  "tty": true, "stdin": true}`` creates the exec (an audited write) and answers
  201 with an ``id``; ``GET /v1/deployments/{name}/exec/{id}/attach`` (a
  WebSocket, within 60 s, once) starts it. Server → client: binary frames,
  the first byte the stream (1 stdout, 2 stderr; with a TTY everything is 1),
  then the bytes; at the end a text frame ``{"exit_code": n}`` and close.
  Client → server: binary frames are stdin; text frames are JSON control
  messages ``{"resize": {"rows": r, "cols": c}}`` and ``{"stdin_eof": true}``.
  ``?rows=&cols=`` on the attach sets the first size.
* ``POST /v1/deployments/{name}/run`` ``{"command": [...], "volumes": false,
  "timeout_s": null}`` runs a one-off (patrd/run/oneoff.py) and streams JSON lines
  (``application/x-ndjson``): first ``{"run": id}``, then ``{"t", "stream",
  "line"}`` per output line, last ``{"exit_code": n, "timed_out": bool}``.
  Closing the connection stops and removes the one-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex

from aiohttp import WSMsgType, web

from patrd.api.context import json_object
from patrd.api.runs import runs_of
from patrd.engine.docker_exec import ExecSession, final_exit_code, terminal_size
from patrd.model.deployment import Intent
from patrd.model.errors import Conflict, EngineError, NotFound, PatrdError, SpecError
from patrd.model.instances import ContainerState, Instance
from patrd.model.naming import instance_name
from patrd.observe.logs import format_ts
from patrd.run.oneoff import RunRequest, new_run_id, parse_command, parse_timeout

EVENT_COMMAND_CHARS = 200  # the command as recorded in the deployment's events


def _event_command(command: tuple[str, ...]) -> str:
    text = shlex.join(command)
    return text if len(text) <= EVENT_COMMAND_CHARS else text[: EVENT_COMMAND_CHARS - 1] + "…"


def _bool(body: dict[str, object], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise SpecError(key, "must be true or false")
    return value


def pick_instance(instances: list[Instance], deployment: str, wanted: str | None) -> Instance:
    """Pure: the running instance named ``wanted`` (``web-1`` or a container id prefix);
    without a name, the lowest slot of the newest revision."""
    running = [i for i in instances if i.state is ContainerState.RUNNING]
    if wanted:
        for inst in running:
            if instance_name(inst.deployment, inst.slot) == wanted:
                return inst
        if len(wanted) >= 4:
            matches = [i for i in running if i.container_id.startswith(wanted)]
            if len(matches) == 1:
                return matches[0]
        names = ", ".join(sorted(instance_name(i.deployment, i.slot) for i in running)) or "none"
        raise NotFound(f"no running instance {wanted!r} of {deployment!r} (running: {names})")
    if not running:
        raise Conflict(f"deployment {deployment!r} has no running instance")
    return sorted(running, key=lambda i: (-i.revision, i.slot))[0]


async def create_exec(request: web.Request) -> web.Response:
    runs = runs_of(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    body = await json_object(request)
    unknown = set(body) - {"command", "instance", "tty", "stdin"}
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown field; allowed: command, instance, tty, stdin")
    command = parse_command(body.get("command"), "command")
    wanted = body.get("instance")
    if wanted is not None and not isinstance(wanted, str):
        raise SpecError("instance", "must be an instance name such as web-0")
    tty, stdin = _bool(body, "tty"), _bool(body, "stdin")
    if record.intent is Intent.DELETE:
        raise Conflict(f"deployment {record.name!r} is being deleted")
    inst = pick_instance(await runs.engine.list_instances(record.id), record.name, wanted)
    name = instance_name(inst.deployment, inst.slot)
    exec_id = await runs.engine.exec_create(inst.container_id, command, tty=tty, stdin=stdin)
    token = runs.sessions.add(record.id, exec_id, name, tty=tty, stdin=stdin)
    await runs.store.add_event(
        record.id, "exec", f"exec in {name}: {_event_command(command)}", inst.revision
    )
    return web.json_response(
        {
            "id": token,
            "instance": name,
            "container": inst.container_id[:12],
            "tty": tty,
            "stdin": stdin,
            "attach": f"/v1/deployments/{record.name}/exec/{token}/attach",
        },
        status=201,
    )


async def attach_exec(request: web.Request) -> web.StreamResponse:
    runs = runs_of(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    pending = runs.sessions.take(request.match_info["id"], record.id)
    if pending is None:
        raise NotFound("no such exec waiting for attach (each is attached once, within 60 s)")
    size = terminal_size(request.query.get("rows"), request.query.get("cols"))
    stream = await runs.engine.exec_start(pending.exec_id)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
    try:
        await ws.prepare(request)
        if size is not None and pending.tty:
            with contextlib.suppress(EngineError):
                await stream.resize(*size)
        pump = asyncio.create_task(_output(stream, ws))
        feed = asyncio.create_task(_input(stream, ws, tty=pending.tty))
        done, _ = await asyncio.wait({pump, feed}, return_when=asyncio.FIRST_COMPLETED)
        if pump in done:
            code = await final_exit_code(stream)
            if not ws.closed:
                await ws.send_json({"exit_code": code})
                await ws.close()
        feed.cancel()
        pump.cancel()
        await asyncio.gather(pump, feed, return_exceptions=True)
    finally:
        await stream.close()
    return ws


async def _output(stream: ExecSession, ws: web.WebSocketResponse) -> None:
    while True:
        chunk = await stream.read()
        if chunk is None:
            return
        number, data = chunk
        if ws.closed:
            return
        await ws.send_bytes(bytes([number if number in (1, 2) else 1]) + data)


async def _input(stream: ExecSession, ws: web.WebSocketResponse, *, tty: bool) -> None:
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            await stream.write(message.data)
        elif message.type == WSMsgType.TEXT:
            try:
                control = json.loads(message.data)
            except ValueError:
                continue
            if not isinstance(control, dict):
                continue
            if control.get("stdin_eof"):
                stream.close_stdin()
            resize = control.get("resize")
            if tty and isinstance(resize, dict):
                size = terminal_size(resize.get("rows"), resize.get("cols"))
                if size is not None:
                    with contextlib.suppress(EngineError):
                        await stream.resize(*size)


async def run_oneoff(request: web.Request) -> web.StreamResponse:
    runs = runs_of(request)
    record = await runs.store.get_deployment(request.match_info["name"])
    body = await json_object(request)
    unknown = set(body) - {"command", "volumes", "timeout_s"}
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown field; allowed: command, volumes, timeout_s")
    command = parse_command(body.get("command"), "command")
    volumes = _bool(body, "volumes")
    timeout = parse_timeout(body.get("timeout_s"), "timeout_s")
    run = new_run_id()
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    response.enable_chunked_encoding()

    async def started() -> None:
        await runs.store.add_event(
            record.id, "run", f"one-off {run} started: {_event_command(command)}", record.revision
        )
        await response.prepare(request)
        await _line(response, {"run": run})

    async def output(stream: str, ts_ns: int, line: bytes) -> None:
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        await _line(response, {"t": format_ts(ts_ns), "stream": stream, "line": text})

    try:
        result = await runs.runner.run(
            record,
            RunRequest(command=command, run=run, volumes=volumes, timeout_s=timeout),
            output,
            on_created=started,
        )
    except PatrdError as exc:
        if not response.prepared:
            raise
        await _line(response, {"error": str(exc)})
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
    verdict = "timed out" if result.timed_out else f"exited {result.exit_code}"
    await runs.store.add_event(
        record.id,
        "run",
        f"one-off {run} {verdict} after {result.ended_at - result.started_at:.1f}s",
        record.revision,
    )
    with contextlib.suppress(ConnectionResetError):
        await _line(response, {"exit_code": result.exit_code, "timed_out": result.timed_out})
        await response.write_eof()
    return response


async def _line(response: web.StreamResponse, item: dict[str, object]) -> None:
    await response.write((json.dumps(item, ensure_ascii=False) + "\n").encode())
