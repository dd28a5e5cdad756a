"""``exec`` into a running instance and one-off ``run`` s, on the real engine."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import Any

import aiohttp
import pytest

from tests.support.attach import attach
from tests.support.daemon import REPO, Api, Daemon, containers_of, patrctl
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


def spec(name: str, **extra: Any) -> dict[str, Any]:
    mounts = {"app.conf": base64.b64encode(b"mode=oneoff\n").decode()}
    return web_spec(name, **{"env": {"GREETING": "hello-exec"}, "config_mounts": mounts, **extra})


async def run(daemon: Daemon, name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.post(f"http://patrd/v1/deployments/{name}/run", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return [json.loads(line) for line in (await resp.text()).splitlines()]


async def test_exec_runs_env_in_an_instance(daemon: Daemon, api: Api, new_name) -> None:
    name = new_name("ex")
    await api.ok("POST", "/v1/deployments", spec(name, scale={"min": 2, "max": 2}))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)

    created = await api.ok(
        "POST", f"/v1/deployments/{name}/exec", {"command": ["env"], "instance": f"{name}-1"}
    )
    assert created["instance"] == f"{name}-1"
    out, err, code = await attach(daemon, created["attach"])
    env = dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)
    assert code == 0, (out, err)
    assert env["GREETING"] == "hello-exec" and env["PATRD_INSTANCE"] == "1"
    assert env["DEPLOYMENT_NAME"] == name

    # the exit status, stderr, and stdin with its EOF
    created = await api.ok(
        "POST",
        f"/v1/deployments/{name}/exec",
        {"command": ["sh", "-c", "cat; echo bad >&2; exit 3"], "stdin": True},
    )
    out, err, code = await attach(daemon, created["attach"], stdin=b"piped in\n")
    assert (out, err, code) == (b"piped in\n", b"bad\n", 3)

    # a TTY: the command sees a terminal
    created = await api.ok(
        "POST",
        f"/v1/deployments/{name}/exec",
        {"command": ["sh", "-c", "[ -t 1 ] && echo is-a-tty"], "tty": True},
    )
    out, _, code = await attach(daemon, created["attach"] + "?rows=40&cols=120")
    assert code == 0 and b"is-a-tty" in out

    # an exec id is good for one attach
    status, _ = await api.call("GET", created["attach"])
    assert status in (400, 404)

    status, error = await api.call(
        "POST", f"/v1/deployments/{name}/exec", {"command": ["env"], "instance": f"{name}-7"}
    )
    assert status == 404 and f"{name}-0" in error["message"]
    status, error = await api.call("POST", f"/v1/deployments/{name}/exec", {"command": "env"})
    assert status == 422 and error["field"] == "command"
    kinds = [e["kind"] for e in (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]]
    assert kinds.count("exec") == 3


async def test_run_streams_output_and_exit_status(daemon: Daemon, api: Api, new_name) -> None:
    name = new_name("run")
    await api.ok("POST", "/v1/secrets", {"name": f"{name}-key", "value": "s3cret-value"})
    dep_env = {"GREETING": "hello-exec", "KEY": {"secret": f"{name}-key"}}
    await api.ok("POST", "/v1/deployments", spec(name, env=dep_env))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    [instance] = containers_of(name)

    script = (
        "echo $GREETING $KEY; cat /etc/config/app.conf; wget -qO- http://$NAME-0/cgi-bin/version"
    )
    lines = await run(
        daemon,
        name,
        {"command": ["sh", "-c", f"NAME={name}; {script}; echo e >&2; exit 7"]},
    )
    assert lines[0]["run"].startswith("run-")
    out = [item["line"] for item in lines if item.get("stream") == "stdout"]
    err = [item["line"] for item in lines if item.get("stream") == "stderr"]
    # env with the secret resolved, the config files, the deployment's network (web-0 by name)
    assert out == ["hello-exec s3cret-value", "mode=oneoff", "v1"] and err == ["e"], lines
    assert lines[-1] == {"exit_code": 7, "timed_out": False}
    # the one-off is gone; the instance was not touched
    await until(lambda: containers_of(name) == [instance], 30, "one-off removed", daemon)

    # killed at its timeout
    lines = await run(daemon, name, {"command": ["sleep", "60"], "timeout_s": 1})
    assert lines[-1]["timed_out"] is True and lines[-1]["exit_code"] != 0

    # volumes: refused for a deployment without volumes (the field is named)
    status, error = await api.call(
        "POST", f"/v1/deployments/{name}/run", {"command": ["true"], "volumes": True}
    )
    assert status == 422 and error["field"] == "volumes"

    # patrctl run exits with the command's status and prints its output
    cli = await asyncio.to_thread(patrctl, daemon, "run", name, "--", "sh", "-c", "echo hi; exit 5")
    assert (cli.returncode, cli.stdout) == (5, "hi\n"), cli.stderr
    # patrctl exec without a TTY streams, and exits with the command's status too
    cli = await asyncio.to_thread(
        patrctl, daemon, "exec", name, "--", "sh", "-c", "echo $GREETING; exit 4"
    )
    assert (cli.returncode, cli.stdout) == (4, "hello-exec\n"), cli.stderr
    # -i forwards stdin, EOF included
    cli = await asyncio.to_thread(
        lambda: patrctl(
            daemon, "exec", name, "-i", "--", "sh", "-c", "cat; exit 6", stdin="piped through\n"
        )
    )
    assert (cli.returncode, cli.stdout) == (6, "piped through\n"), cli.stderr
    await until(lambda: containers_of(name) == [instance], 30, "one-offs removed", daemon)


async def test_run_with_volumes_sees_the_instance_volume(
    daemon: Daemon, api: Api, new_name
) -> None:
    name = new_name("vol")
    await api.ok(
        "POST", "/v1/deployments", spec(name, volumes={"data": {"path": "/data", "size_gb": 1}})
    )
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    [instance] = containers_of(name)
    subprocess.run(["docker", "exec", instance, "sh", "-c", "echo kept > /data/mark"], check=True)
    lines = await run(daemon, name, {"command": ["cat", "/data/mark"], "volumes": True})
    assert [i["line"] for i in lines if "line" in i] == ["kept"]
    assert lines[-1]["exit_code"] == 0
    lines = await run(daemon, name, {"command": ["ls", "/data"]})
    assert lines[-1]["exit_code"] != 0  # without --volumes there is no /data


async def test_tty_resize_over_the_api_and_from_patrctl_exec_it(
    daemon: Daemon, api: Api, new_name
) -> None:
    name = new_name("tty")
    await api.ok("POST", "/v1/deployments", spec(name))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    script = "sleep 1; stty size; read line; stty size"

    # the API: the first size from the attach query, the next one in-band
    created = await api.ok(
        "POST",
        f"/v1/deployments/{name}/exec",
        {"command": ["sh", "-c", script], "tty": True, "stdin": True},
    )
    out = bytearray()
    code = None
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.ws_connect(f"http://patrd{created['attach']}?rows=33&cols=101") as ws,
    ):
        async with asyncio.timeout(30):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    out.extend(msg.data[1:])
                    if b"33 101" in out and b"next" not in out:
                        await ws.send_str(json.dumps({"resize": {"rows": 44, "cols": 132}}))
                        await ws.send_bytes(b"next\r")
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    code = json.loads(msg.data)["exit_code"]
    assert code == 0, out
    assert b"33 101" in out and b"44 132" in out, out

    # patrctl exec -it on a pseudo-terminal: raw mode, SIGWINCH → resize, restored after
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "patrd.cli.main", "exec", name, "-it", "--", "sh", "-c", script],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "PATRD_SOCKET": str(daemon.socket)},
        cwd=REPO,
    )
    seen = bytearray()
    try:
        seen += await asyncio.to_thread(read_until, master, b"30 90", seen)
        assert termios.tcgetattr(slave)[3] & termios.ECHO == 0  # raw: no local echo
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 140, 0, 0))
        proc.send_signal(signal.SIGWINCH)
        await asyncio.sleep(0.5)
        os.write(master, b"go\r")
        seen += await asyncio.to_thread(read_until, master, b"45 140", seen)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert termios.tcgetattr(slave) == before  # the terminal is given back as it was
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def read_until(fd: int, wanted: bytes, already: bytes | bytearray, timeout: float = 30) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while wanted not in bytes(already) + bytes(got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{wanted!r} not seen: {bytes(already) + bytes(got)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            got += os.read(fd, 4096)
    return bytes(got)
