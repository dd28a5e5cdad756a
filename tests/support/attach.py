"""An exec's output over the API's attach WebSocket, for the exec tests."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.support.daemon import Daemon


async def attach(
    daemon: Daemon, path: str, stdin: bytes | None = None
) -> tuple[bytes, bytes, int | None]:
    """(stdout, stderr, exit code) of an exec, over the API's attach WebSocket."""
    out, err, code = bytearray(), bytearray(), None
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.ws_connect(f"http://patrd{path}") as ws,
    ):
        if stdin is not None:
            await ws.send_bytes(stdin)
            await ws.send_str(json.dumps({"stdin_eof": True}))
        async with asyncio.timeout(30):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    (err if msg.data[0] == 2 else out).extend(msg.data[1:])
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    code = json.loads(msg.data)["exit_code"]
    return bytes(out), bytes(err), code
