"""The dashboard's end-to-end rig: a daemon with the TCP API and the dashboard on,
its API client, a headless browser, and the steps the walks share.

The fixtures ``site``, ``api`` and ``browser`` are bound by name in each
``test_dashboard*.py`` that drives the browser.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.browser import Browser
from tests.support.daemon import Api, Daemon, running_tcp_daemon
from tests.support.waits import until

PASSWORD = "correct horse battery staple"
TOKEN = "dashboard-test-token-0123456789"
REPO = "patrd-test/web"
SESSION_COOKIE = "__Host-patrd_session"
CSRF_COOKIE = "__Host-patrd_csrf"


@dataclass
class Site:
    daemon: Daemon
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.daemon.proxy_port, self.daemon.https_port]


@pytest.fixture
def site(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[Site]:
    (tmp_path / "admin-password").write_text(PASSWORD + "\n")
    config: dict[str, dict[str, Any]] = {
        "dashboard": {"enabled": True, "admin_password_file": str(tmp_path / "admin-password")},
        # A price table, so the estimated cost is more than zeros.
        "cost": {"vcpu_month": 10.0, "gib_ram_month": 4.0},
    }
    with running_tcp_daemon(tmp_path, TOKEN, config) as (daemon, port):
        yield Site(daemon, port)


@pytest.fixture
async def api(site: Site) -> AsyncIterator[Api]:
    async with Api(site.daemon) as client:
        yield client


@pytest.fixture
def browser(site: Site) -> Iterator[Browser]:
    with Browser(site.ports) as b:
        yield b


def login(b: Browser, site: Site) -> None:
    b.get(site.base + "/ui/")
    b.wait("the login page", lambda: b.url.endswith("/ui/login"))
    b.fill("#password", PASSWORD)
    b.click("#login-submit")
    b.wait_text("#list-summary", "deployments")


def unlabelled_inputs(b: Browser) -> list[str]:
    """Visible form controls without a label or aria-label (accessibility basics)."""
    return list(
        b.js(
            """
            return [...document.querySelectorAll('input, select, textarea')]
              .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML.slice(0, 120));
            """
        )
    )


def tab(b: Browser, name: str) -> None:
    b.click(f"#tab-{name}")
    b.wait(
        f"the {name} tab",
        lambda: b.css(f"#tab-{name}").get_attribute("aria-selected") == "true",
    )


def docker_exec(container: str, *argv: str) -> str:
    return subprocess.run(
        ["docker", "exec", container, *argv], capture_output=True, text=True, check=True
    ).stdout


async def proxied(site: Site, host: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{site.daemon.proxy_port}/",
            headers={"Host": host},
            allow_redirects=False,
        ) as resp,
    ):
        return resp.status, await resp.text()


async def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    """:func:`until` at the dashboard tests' pace (every 0.2 s, a minute by default)."""
    return await until(check, timeout, what, interval=0.2)


async def deployed(api: Api, name: str, revision: int) -> bool:
    history = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"]
    return any(h["revision"] == revision and h["state"] == "deployed" for h in history)
