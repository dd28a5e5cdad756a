"""Inside running containers: logs, stats, exec (backup hooks) and attached exec streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Protocol

import aiodocker
import aiohttp
from aiodocker.stream import Stream

from patrd.engine.docker_base import DockerBase, translate
from patrd.model.errors import Conflict, EngineError
from patrd.model.instances import ExecResult

EXEC_OUTPUT_CAP = 64 * 1024  # bytes of an exec's output ExecResult keeps


def log_params(
    *, since: float | None, until: float | None, tail: int | None, follow: bool
) -> dict[str, str]:
    """The query of Docker's logs endpoints (containers, and Swarm's tasks: no ``until``)."""
    params = {
        "stdout": "1",
        "stderr": "1",
        "timestamps": "1",
        "follow": "1" if follow else "0",
        "tail": "all" if tail is None else str(tail),
    }
    if since is not None:
        params["since"] = f"{since:.9f}"
    if until is not None:
        params["until"] = f"{until:.9f}"
    return params


async def stream_logs(
    docker: aiodocker.Docker,
    path: str,
    params: dict[str, str],
    what: str,
    *,
    timeout_s: float = 120,
) -> AsyncGenerator[tuple[str, bytes], None]:
    """(stream, line) frames of Docker's multiplexed log format (no TTY).

    An 8-byte header per frame (stream 1 stdout / 2 stderr, 3 zero bytes,
    big-endian length). ``/containers/{id}/logs`` and, on a swarm manager,
    ``/tasks/{id}/logs`` (the task's node sends them through the manager)
    answer in this format. ``timeout_s`` bounds a reply that does not follow.
    """
    follow = params.get("follow") == "1"
    timeout = aiohttp.ClientTimeout(total=None if follow else timeout_s, sock_connect=10)
    buf = bytearray()
    try:
        async with docker._query(path, method="GET", params=params, timeout=timeout) as response:
            async for chunk in response.content.iter_any():
                buf += chunk
                pos = 0
                while len(buf) - pos >= 8:
                    size = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                    if len(buf) - pos < 8 + size:
                        break
                    kind = "stderr" if buf[pos] == 2 else "stdout"
                    yield kind, bytes(buf[pos + 8 : pos + 8 + size])
                    pos += 8 + size
                del buf[:pos]
    except aiodocker.DockerError as exc:
        raise EngineError(f"{what}: {exc.message}") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise EngineError(f"{what}: {exc!r}") from exc


class DockerExec(DockerBase):
    """Logs and stats (patrd/observe/), exec for backup hooks (patrd/state/offsite.py),
    attached exec sessions (patrd/api/exec.py)."""

    async def logs(
        self,
        container_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """(stream, line) frames of a container's log, each line prefixed by its timestamp.

        Docker's multiplexed format (no TTY): an 8-byte header per frame
        (stream 1 stdout / 2 stderr, 3 zero bytes, big-endian length).
        ``follow`` ends when the container stops.
        """
        params = log_params(since=since, until=until, tail=tail, follow=follow)
        what = f"logs {container_id[:12]}"
        path = f"containers/{container_id}/logs"
        async with contextlib.aclosing(stream_logs(self.docker, path, params, what)) as frames:
            async for frame in frames:  # closed with this generator (a reader that stops early)
                yield frame

    async def stats(self, container_id: str) -> dict[str, Any]:
        """One reading of Docker's stats endpoint (``one-shot``: no 1 s second sample)."""
        async with translate(f"stats {container_id[:12]}"):
            data = await self.docker._query_json(
                f"containers/{container_id}/stats",
                params={"stream": "false", "one-shot": "true"},
            )
        return dict(data) if isinstance(data, dict) else {}

    async def exec(self, container_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        """Run ``argv`` in a running container and wait for it (backup hooks).

        A missing program is exit code 126/127 with the reason in the output,
        not an error; ``EngineError`` when Docker refuses or the timeout passes.
        """
        what = f"exec in {container_id[:12]}"
        output = bytearray()
        try:
            async with asyncio.timeout(timeout_s), translate(what):
                container = self.docker.containers.container(container_id)
                run = await container.exec(list(argv), stdout=True, stderr=True)
                async with run.start(detach=False) as stream:
                    while (message := await stream.read_out()) is not None:
                        output += message.data[: max(0, EXEC_OUTPUT_CAP - len(output))]
                info = await run.inspect()
        except TimeoutError:
            raise EngineError(f"{what}: no exit within {timeout_s:g} s") from None
        code = info.get("ExitCode")
        return ExecResult(exit_code=-1 if code is None else int(code), output=bytes(output))

    async def exec_create(
        self, container_id: str, command: tuple[str, ...], *, tty: bool, stdin: bool
    ) -> str:
        """Create (not start) an exec of ``command`` in a running container; its id."""
        body = {
            "Cmd": list(command),
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
        }
        if tty:
            body["Env"] = ["TERM=xterm"]
        try:
            async with translate(f"exec in {container_id[:12]}"):
                data = await self.docker._query_json(
                    f"containers/{container_id}/exec", method="POST", data=json.dumps(body)
                )
        except EngineError as exc:
            # Listed running a moment ago, stopped or gone now (a restart, a
            # rollout): the caller's conflict with the instance's state, not an
            # engine failure.
            cause = exc.__cause__
            if isinstance(cause, aiodocker.DockerError) and cause.status in (404, 409):
                raise Conflict(
                    f"instance container {container_id[:12]} stopped before the command "
                    "could start; try again"
                ) from exc
            raise
        return str(data["Id"])

    async def exec_start(self, exec_id: str) -> ExecStream:
        """Start a created exec, attached: output, stdin and resize through the stream."""
        stream = self.docker.containers.exec(exec_id).start(detach=False)
        async with translate(f"exec start {exec_id[:12]}"):
            await stream._init()
        return ExecStream(self.docker, exec_id, stream)


class ExecSession(Protocol):
    """An attached exec as patrd/api/exec.py drives it: :class:`ExecStream` on this
    node, an agent's WebSocket for a swarm task elsewhere (patrd/run/swarm_exec.py)."""

    async def read(self) -> tuple[int, bytes] | None: ...
    async def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    async def resize(self, rows: int, cols: int) -> None: ...
    async def exit_code(self) -> int | None: ...
    async def close(self) -> None: ...


class ExecStream:
    """One attached exec: read output, write stdin, half-close, resize, exit code.

    Without a TTY the output comes demultiplexed (1 stdout, 2 stderr); with
    one it is a single stream (1).
    """

    def __init__(self, docker: aiodocker.Docker, exec_id: str, stream: Stream) -> None:
        self._docker = docker
        self._id = exec_id
        self._stream = stream

    async def read(self) -> tuple[int, bytes] | None:
        """The next chunk of output, or None at the end."""
        async with translate(f"exec read {self._id[:12]}"):
            message = await self._stream.read_out()
        return None if message is None else (message.stream, message.data)

    async def write(self, data: bytes) -> None:
        async with translate(f"exec write {self._id[:12]}"):
            await self._stream.write_in(data)

    def close_stdin(self) -> None:
        """EOF on the command's stdin; output keeps coming."""
        response = self._stream._resp
        connection = None if response is None else response.connection
        transport = None if connection is None else connection.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()

    async def resize(self, rows: int, cols: int) -> None:
        async with translate(f"exec resize {self._id[:12]}"):
            await self._docker.containers.exec(self._id).resize(h=rows, w=cols)

    async def exit_code(self) -> int | None:
        async with translate(f"exec inspect {self._id[:12]}"):
            info = await self._docker._query_json(f"exec/{self._id}/json")
        code = info.get("ExitCode")
        return None if code is None else int(code)

    async def close(self) -> None:
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
            await self._stream.close()


EXIT_CODE_WAIT_S = 2.0  # Docker reports an exec's exit code a moment after its output ends


async def final_exit_code(stream: ExecSession) -> int:
    """The exec's exit code once Docker has it (-1 if it has none after a wait)."""
    deadline = asyncio.get_running_loop().time() + EXIT_CODE_WAIT_S
    while True:
        code = await stream.exit_code()
        if code is not None or asyncio.get_running_loop().time() > deadline:
            return -1 if code is None else code
        await asyncio.sleep(0.05)


def terminal_size(rows: object, cols: object) -> tuple[int, int] | None:
    """(rows, cols) of a terminal resize, when both are sane whole numbers."""
    try:
        r, c = int(str(rows)), int(str(cols))
    except ValueError:
        return None
    return (r, c) if 0 < r <= 10000 and 0 < c <= 10000 else None
