"""exec on a swarm: the agent's request checks and the manager's WebSocket relay (issue 17).

The relay runs against a real aiohttp WebSocket server standing in for an
agent's attach route (no Docker here); tests/integration/test_swarm_agent.py
execs into instances on real swarm workers.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from patrd.observe.agent_exec import exec_request, resize_of
from patrd.run.swarm_exec import AgentExec, exit_code_of


def test_a_create_request_names_its_bad_field() -> None:
    assert exec_request({"task": "t1", "command": ["sh", "-c", "id"], "tty": True}) == (
        "t1",
        ("sh", "-c", "id"),
        True,
        False,
    )
    for body, field in [
        ([], "JSON object"),
        ({"command": ["id"]}, "task"),
        ({"task": "", "command": ["id"]}, "task"),
        ({"task": "t", "command": "id"}, "command"),
        ({"task": "t", "command": []}, "command"),
        ({"task": "t", "command": ["id", 3]}, "command"),
        ({"task": "t", "command": ["id"], "stdin": "yes"}, "tty, stdin"),
    ]:
        with pytest.raises(ValueError, match=field):
            exec_request(body)


@pytest.mark.parametrize(
    ("control", "size"),
    [
        ({"resize": {"rows": 40, "cols": 120}}, (40, 120)),
        ({"resize": {"rows": 0, "cols": 120}}, None),
        ({"resize": {"rows": 40, "cols": 10001}}, None),
        ({"resize": {"rows": "40", "cols": 120}}, None),
        ({"resize": [40, 120]}, None),
        ({"stdin_eof": True}, None),
        ([1], None),
    ],
)
def test_resize_messages(control: Any, size: tuple[int, int] | None) -> None:
    assert resize_of(control) == size


def test_the_exit_code_frame() -> None:
    assert exit_code_of('{"exit_code": 3}') == 3
    assert exit_code_of('{"exit_code": true}') is None
    assert exit_code_of("[3]") is None
    assert exit_code_of("not json") is None


async def test_the_relay_passes_output_stdin_controls_and_the_exit_code() -> None:
    seen: list[Any] = []

    async def attach(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen.append(request.headers.get("Authorization"))
        await ws.send_bytes(b"\x01hello ")
        await ws.send_bytes(b"\x02oops")
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                seen.append(message.data)
            elif message.type == WSMsgType.TEXT:
                control = json.loads(message.data)
                seen.append(control)
                if control.get("stdin_eof"):
                    break
        await ws.send_json({"exit_code": 7})
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/attach", attach)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/attach", headers={"Authorization": "Bearer t"}
        )
        relay = AgentExec(session, ws)
        assert await relay.read() == (1, b"hello ")
        assert await relay.read() == (2, b"oops")
        await relay.write(b"typed")
        await relay.resize(24, 80)
        relay.close_stdin()
        assert await relay.read() is None  # the exit code frame, then the close
        assert await relay.exit_code() == 7
        await relay.close()
    finally:
        await session.close()
        await runner.cleanup()
    assert seen == [
        "Bearer t",
        b"typed",
        {"resize": {"rows": 24, "cols": 80}},
        {"stdin_eof": True},
    ]


def test_only_this_owners_patrd_volumes_are_listed() -> None:
    from patrd.engine.swarm_node import owned_volumes
    from patrd.model.instances import VolumeInfo

    def item(name: str, **labels: str) -> dict[str, Any]:
        return {"Name": name, "Mountpoint": f"/v/{name}", "Labels": labels}

    mine = {"patrd.managed": "1", "patrd.owner": "o1", "patrd.deployment": "web"}
    items = [
        item("patrd.web.data.1", **mine, **{"patrd.volume": "data", "patrd.instance": "1"}),
        item("patrd.web.data.0", **mine, **{"patrd.volume": "data", "patrd.instance": "0"}),
        item("other", **{**mine, "patrd.owner": "o2", "patrd.instance": "0"}),  # another install
        item("unmanaged", **{"patrd.owner": "o1", "patrd.instance": "0"}),
        item("no-slot", **mine),
        {"Name": "bare", "Labels": None},
    ]
    assert owned_volumes(items, "o1") == [
        VolumeInfo("patrd.web.data.0", "web", "data", 0, "/v/patrd.web.data.0"),
        VolumeInfo("patrd.web.data.1", "web", "data", 1, "/v/patrd.web.data.1"),
    ]


def test_a_listed_volume_from_an_agent() -> None:
    from patrd.model.instances import VolumeInfo
    from patrd.observe.agent_volumes import volume_from_json, volume_json

    v = VolumeInfo("patrd.web.data.0", "web", "data", 0, "/on/the/node")
    assert volume_from_json(volume_json(v)) == VolumeInfo("patrd.web.data.0", "web", "data", 0, "")
    bad: Any
    for bad in (
        [],
        {"name": "x"},
        {**volume_json(v), "slot": "0"},
        {**volume_json(v), "slot": True},
    ):
        with pytest.raises(ValueError):
            volume_from_json(bad)
