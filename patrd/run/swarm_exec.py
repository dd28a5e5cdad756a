"""``exec`` into swarm instances on any node (the API's ``ExecEngine`` on a swarm).

patrd/api/exec.py creates an exec in an instance, then attaches to it. On a
swarm an instance is a task (``SERVICE.TASK``) on some node:

* on this node (the manager): the task's container is found by its task
  label and the exec runs through this node's engine, as on one node;
* on another node: through that node's agent (patrd/observe/agent_exec.py),
  ``POST /v1/agent/exec`` then a WebSocket attach, with the agent's token;
  :class:`AgentExec` relays the WebSocket as an ``ExecSession``;
* a plain container (from before the switch to swarm) is on the manager.

Exec IDs carry where they live: ``local:<id>`` or ``agent:<id>@<node address>``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from patrd.engine.docker_exec import ExecSession
from patrd.engine.swarm_backend import SwarmBackend, is_container_id, service_of, task_of
from patrd.engine.swarm_node import NodeDocker
from patrd.model.errors import Conflict, EngineError
from patrd.model.instances import Instance
from patrd.observe.agent_exec import EXEC_PATH

AGENT_CREATE_TIMEOUT_S = 10.0


class SwarmExec:
    """``list_instances``, ``exec_create``, ``exec_start`` for patrd/api/exec.py."""

    def __init__(self, backend: SwarmBackend, local: NodeDocker, token: str, port: int) -> None:
        self._backend = backend
        self._local = local
        self._token = token
        self._port = port

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return await self._backend.list_instances(deployment_id)

    async def exec_create(
        self, container_id: str, command: tuple[str, ...], *, tty: bool, stdin: bool
    ) -> str:
        if is_container_id(container_id):
            return "local:" + await self._local.exec_create(
                container_id, command, tty=tty, stdin=stdin
            )
        task = task_of(container_id)
        placed = [t for t in await self._backend.swarm.list_tasks() if t.task_id == task and task]
        if not placed:
            raise Conflict(f"instance {service_of(container_id)[:12]} has no task now; try again")
        self_id, addresses = await self._backend.agent_nodes()
        node = placed[0].node_id
        if node == self_id:
            found = [t for t in await self._local.tasks() if t.task_id == task]
            if not found:
                raise Conflict("the instance's container stopped; try again")
            exec_id = await self._local.exec_create(
                found[0].container_id, command, tty=tty, stdin=stdin
            )
            return "local:" + exec_id
        address = addresses.get(node)
        if not address:
            raise Conflict(f"the instance's node {node[:12]} is not ready")
        body = {"task": task, "command": list(command), "tty": tty, "stdin": stdin}
        answer = await self._agent("POST", address, EXEC_PATH, body)
        return f"agent:{answer['id']}@{address}"

    async def exec_start(self, exec_id: str) -> ExecSession:
        where, _, rest = exec_id.partition(":")
        if where == "local":
            return await self._local.exec_start(rest)
        docker_id, _, address = rest.partition("@")
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                f"{self._base(address)}{EXEC_PATH}/{docker_id}/attach",
                headers=self._headers(),
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                heartbeat=30.0,
                max_msg_size=1024 * 1024,
            )
        except (aiohttp.ClientError, OSError) as exc:
            await session.close()
            raise EngineError(f"exec on node {address}: its agent: {exc}") from exc
        return AgentExec(session, ws)

    async def _agent(self, method: str, address: str, path: str, body: Any) -> dict[str, Any]:
        url = self._base(address) + path
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=AGENT_CREATE_TIMEOUT_S)
                ) as http,
                http.request(method, url, json=body, headers=self._headers()) as resp,
            ):
                text = await resp.text()
                if resp.status == 404:
                    raise Conflict(f"the instance stopped on node {address}; try again")
                if resp.status >= 300:
                    raise EngineError(f"node {address}: its agent answered {resp.status}: {text}")
                answer = json.loads(text)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise EngineError(f"node {address}: its agent: {exc or type(exc).__name__}") from exc
        if not isinstance(answer, dict):
            raise EngineError(f"node {address}: its agent answered {text[:100]!r}")
        return answer

    def _base(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self._port}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}


class AgentExec:
    """An exec attached through an agent's WebSocket, as an ``ExecSession``."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._code: int | None = None
        self._sends: set[asyncio.Task[None]] = set()

    async def read(self) -> tuple[int, bytes] | None:
        while True:
            message = await self._ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                data: bytes = message.data
                return data[0], data[1:]
            if message.type == aiohttp.WSMsgType.TEXT:
                self._code = exit_code_of(message.data)
                continue
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return None

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    def close_stdin(self) -> None:
        task = asyncio.get_running_loop().create_task(self._ws.send_json({"stdin_eof": True}))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def resize(self, rows: int, cols: int) -> None:
        await self._ws.send_json({"resize": {"rows": rows, "cols": cols}})

    async def exit_code(self) -> int | None:
        return self._code

    async def close(self) -> None:
        await self._ws.close()
        await self._session.close()


def exit_code_of(text: str) -> int | None:
    """The agent's last text frame ``{"exit_code": n}`` → n."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    code = body.get("exit_code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None
