"""The locally built test images serve what the other tests rely on."""

from __future__ import annotations

import subprocess

import aiohttp
import pytest

from tests.support.waits import until

pytestmark = pytest.mark.docker


def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout.strip()


async def _wait_http(session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> str:
    async def answered() -> str | None:
        try:
            async with session.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except aiohttp.ClientError:
            return None

    text: str = await until(answered, timeout, f"a 200 from {url}", interval=0.05)
    return text


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_web_v1_http_health_and_websocket(test_images: dict[str, str]) -> None:
    container = _docker(
        "run", "-d", "--init", "--rm", "--label", "patrd.test.owner=test_images", test_images["v1"]
    )
    try:
        ip = _docker(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
        )
        assert ip, "container has no bridge IP"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            assert await _wait_http(session, f"http://{ip}/") == "hello from v1\n"

            health = f"http://{ip}/cgi-bin/health"
            assert await _status(session, health) == 200
            _docker("exec", container, "touch", "/tmp/unhealthy")
            assert await _status(session, health) == 500
            _docker("exec", container, "rm", "-f", "/tmp/unhealthy")
            assert await _status(session, health) == 200

            # websocketd + cat: each text message comes back as one text message.
            async with session.ws_connect(f"http://{ip}:8081/") as ws:
                for text in ("ping", "second message"):
                    await ws.send_str(text)
                    msg = await ws.receive(timeout=5)
                    assert msg.type == aiohttp.WSMsgType.TEXT
                    assert msg.data == text
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
