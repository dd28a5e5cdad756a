"""The firewall fails closed: a real patrd in its own network namespace, firewall on.

The daemon's PATH first lacks ``nft`` (the ruleset cannot be loaded): its proxy
listeners stay closed and ``/v1/health`` says why. Once ``nft`` is on its PATH
the keeper loads the table (into the test's namespace only) and the listeners
open. Nothing is loaded into the machine's root namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Api, Daemon
from tests.support.netns import in_ns, netns, socket_in
from tests.support.waits import until

pytestmark = pytest.mark.docker


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("ptdfc") as name:
        yield name


def proxy_state(ns: str, port: int) -> str:
    """ "open" or "refused": a TCP connect to the proxy port from inside ``ns``."""
    sock = socket_in(ns)
    sock.settimeout(2)
    try:
        sock.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return "refused"
    finally:
        sock.close()
    return "open"


async def test_proxy_listeners_open_only_once_the_firewall_is_loaded(
    tmp_path: Path, ns: str
) -> None:
    bindir = tmp_path / "bin"  # on the daemon's PATH; nft appears here later
    bindir.mkdir()
    d = Daemon(tmp_path / "d")
    d.workdir.mkdir()
    d.command_prefix = ["/usr/bin/nsenter", f"--net=/run/netns/{ns}"]
    d.env = {"PATH": f"{bindir}:/usr/bin:/bin"}  # no /usr/sbin: no nft
    d.config = {"firewall": {"enabled": True, "check_interval_s": 0.5}}
    d.start()
    try:
        async with Api(d) as api:
            health: dict[str, Any] = await api.ok("GET", "/v1/health")
            assert health["status"] == "degraded", health
            [problem] = health["problems"]
            assert "proxy listeners closed" in problem and "nft" in problem, problem
            assert proxy_state(ns, d.proxy_port) == "refused"
            firewall = await api.ok("GET", "/v1/firewall")
            assert firewall["enabled"] and not firewall["applied"], firewall

            (bindir / "nft").symlink_to("/usr/sbin/nft")

            async def healthy() -> dict[str, Any] | None:
                health: dict[str, Any] = await api.ok("GET", "/v1/health")
                return health if health["status"] == "ok" else None

            health = await until(healthy, 20, "health ok once nft is back", d, interval=0.2)
            assert health["problems"] == []
            assert proxy_state(ns, d.proxy_port) == "open"
            assert (await api.ok("GET", "/v1/firewall"))["applied"]
        listing = in_ns(ns, "nft", "-s", "list", "table", "inet", "patrd")
        assert "chain input" in listing
        log = d.log_path.read_text()
        assert "proxy_closed" in log and "proxy_opened" in log
    finally:
        d.stop()
