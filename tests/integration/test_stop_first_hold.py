"""A single-instance deployment with a volume is replaced without dropping a request:
the proxy holds new requests while the old instance stops and the new one starts."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of
from tests.support.load import rollout_under_load
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker

HEALTH = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.25, "failure_threshold": 40}


def body(name: str, **extra: Any) -> dict[str, Any]:
    """One instance with a volume: rolled out stop-first (held requests)."""
    volumes = {"data": {"path": "/data", "size_gb": 1}}
    return web_spec(name, health=HEALTH, **{"volumes": volumes, **extra})


async def test_scale_one_volume_rollout_under_load_drops_nothing(
    daemon: Daemon, api: Api, new_name
) -> None:
    name = new_name("hold")
    await api.ok("POST", "/v1/deployments", body(name))
    await until(lambda: rolled_out(api, name, 1), 60, "revision 1 deployed", daemon)
    [old] = containers_of(name)
    result, took = await rollout_under_load(daemon, api, name)
    [new] = containers_of(name)
    assert new != old  # the old instance really stopped before the new one started
    slowest = max(result.latencies_ms)
    print(
        f"stop-first swap in {took:.1f}s; served {dict(result.keys)}; "
        f"slowest request {slowest:.0f} ms (held during the swap)"
    )
    assert slowest > 100, "no request waited: the swap was not exercised"


async def test_held_requests_get_503_with_retry_after_past_the_bound(
    daemon: Daemon, new_name
) -> None:
    """pause_timeout_s = 1 and a new instance that never passes its startup probe."""
    daemon.stop()
    daemon.config = {"proxy": {"pause_timeout_s": 1}}
    daemon.start()
    async with Api(daemon) as api:
        name = new_name("holdto")
        await api.ok("POST", "/v1/deployments", body(name))
        await until(lambda: rolled_out(api, name, 1), 60, "revision 1 deployed", daemon)
        url = f"http://127.0.0.1:{daemon.proxy_port}/"
        async with aiohttp.ClientSession() as http:

            async def held_answer() -> tuple[str, float, str] | None:
                """The first answer that is not a 200 (requests go one after another)."""
                t0 = time.monotonic()
                async with http.get(url, headers={"Host": daemon.host(name)}) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        assert resp.status == 503, (resp.status, text)
                        waited = time.monotonic() - t0
                        return resp.headers.get("Retry-After", ""), waited, text
                return None

            await api.ok(
                "PATCH",
                f"/v1/deployments/{name}",
                {"env": {"UNHEALTHY": "1"}, "startup_probe": {**HEALTH, "failure_threshold": 12}},
            )
            retry_after, waited, text = await until(held_answer, 30, "a held 503", daemon)
        assert retry_after == "5"
        assert f"deployment {name} is replacing its instance" in text
        assert waited < 2.5, waited
        # The new instance never passes: the rollout fails and revision 1 serves again.
        await until(lambda: rolled_out(api, name, 1), 60, "back on revision 1", daemon)
