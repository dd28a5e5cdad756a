"""The agent's exec routes: a command in a task container on this node, for the manager.

``patrctl exec`` on a swarm reaches an instance on another node through that
node's agent (patrd/run/swarm_exec.py is the manager's side):

* ``POST /v1/agent/exec`` ``{"task": ID, "command": [...], "tty": b, "stdin": b}``
  creates the exec in the task's running container here; 201 ``{"id": …}``,
  404 when no running patrd task container of that ID is on this node.
* ``GET /v1/agent/exec/{id}/attach`` (a WebSocket) starts it, with the
  manager's own attach protocol (patrd/api/exec.py): server → client binary
  frames ``stream byte + bytes`` and a last text frame ``{"exit_code": n}``;
  client → server binary frames are stdin, text frames ``{"resize": {...}}``
  and ``{"stdin_eof": true}``.

Both behind the agent's token (patrd/observe/agent.py). The manager has
already checked the caller's scope and recorded the exec in its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from patrd.engine.docker_exec import ExecSession, final_exit_code, terminal_size
from patrd.engine.swarm_node import NodeDocker
from patrd.model.errors import EngineError

EXEC_PATH = "/v1/agent/exec"


def exec_request(body: Any) -> tuple[str, tuple[str, ...], bool, bool]:
    """(task, command, tty, stdin) of a create request; ``ValueError`` naming the field."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    task = body.get("task")
    if not isinstance(task, str) or not task:
        raise ValueError("task: a task ID is required")
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise ValueError("command: a non-empty list of strings is required")
    flags = [body.get(key, False) for key in ("tty", "stdin")]
    if not all(isinstance(f, bool) for f in flags):
        raise ValueError("tty, stdin: must be true or false")
    return task, tuple(command), bool(flags[0]), bool(flags[1])


def resize_of(control: Any) -> tuple[int, int] | None:
    """``{"resize": {"rows": r, "cols": c}}`` → (rows, cols), when sane."""
    resize = control.get("resize") if isinstance(control, dict) else None
    if not isinstance(resize, dict):
        return None
    rows, cols = resize.get("rows"), resize.get("cols")
    if not isinstance(rows, int) or not isinstance(cols, int):
        return None  # JSON numbers only, as the manager sends them
    return terminal_size(rows, cols)
    if not isinstance(resize, dict):
        return None
    rows, cols = resize.get("rows"), resize.get("cols")
    if not isinstance(rows, int) or not isinstance(cols, int):
        return None
    return (rows, cols) if 0 < rows <= 10000 and 0 < cols <= 10000 else None


def add_exec_routes(app: web.Application, docker: NodeDocker) -> None:
    async def create(request: web.Request) -> web.Response:
        try:
            task, command, tty, stdin = exec_request(await request.json())
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        try:
            found = [t for t in await docker.tasks() if t.task_id == task]
            if not found:
                raise web.HTTPNotFound(text=f"no running patrd task {task} on this node")
            exec_id = await docker.exec_create(found[0].container_id, command, tty=tty, stdin=stdin)
        except EngineError as exc:
            raise web.HTTPServiceUnavailable(text=f"this node's Docker engine: {exc}") from exc
        return web.json_response({"id": exec_id}, status=201)

    async def attach(request: web.Request) -> web.StreamResponse:
        try:
            stream = await docker.exec_start(request.match_info["id"])
        except EngineError as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
        try:
            await ws.prepare(request)
            pump = asyncio.create_task(_output(stream, ws))
            feed = asyncio.create_task(_input(stream, ws))
            done, _ = await asyncio.wait({pump, feed}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done and not ws.closed:
                await ws.send_json({"exit_code": await final_exit_code(stream)})
                await ws.close()
            for task in (pump, feed):
                task.cancel()
            await asyncio.gather(pump, feed, return_exceptions=True)
        finally:
            await stream.close()
        return ws

    app.router.add_post(EXEC_PATH, create)
    app.router.add_get(EXEC_PATH + "/{id}/attach", attach, allow_head=False)


async def _output(stream: ExecSession, ws: web.WebSocketResponse) -> None:
    while (chunk := await stream.read()) is not None:
        number, data = chunk
        if ws.closed:
            return
        await ws.send_bytes(bytes([number if number in (1, 2) else 1]) + data)


async def _input(stream: ExecSession, ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            await stream.write(message.data)
        elif message.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError):
                control = json.loads(message.data)
                if isinstance(control, dict) and control.get("stdin_eof"):
                    stream.close_stdin()
                size = resize_of(control)
                if size is not None:
                    with contextlib.suppress(EngineError):
                        await stream.resize(*size)
