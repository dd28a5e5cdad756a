"""The dashboard's Node page in headless Chromium against a real daemon.

Fixtures and login come from tests/support/dashboard_site.py (same daemon set-up: TCP API,
dashboard on, the browser in its own network namespace).
"""

from __future__ import annotations

import psutil
import pytest

from tests.support import dashboard_site
from tests.support.browser import Browser
from tests.support.daemon import Api
from tests.support.receivers import HttpReceiver

pytestmark = pytest.mark.docker

# The daemon with the dashboard on, its API client and the browser (pytest fixtures).
site = dashboard_site.site
api = dashboard_site.api
browser = dashboard_site.browser


async def test_node_page_shows_host_disks_and_notification_targets(
    site: dashboard_site.Site, browser: Browser, api: Api
) -> None:
    async with HttpReceiver() as hook:
        await api.ok(
            "POST",
            "/v1/notifications",
            {"name": "ops", "type": "webhook", "url": hook.url, "events": ["rollout.*"]},
        )
        b = browser
        dashboard_site.login(b, site)
        b.click('header nav a[href="#/node"]')
        b.wait_text("#node-memory", "available")
        b.wait_css("#node-disks tbody tr")
        labels = [row.get_attribute("data-label") for row in b.all("#node-disks tbody tr")]
        assert "data" in labels
        total = b.css("#node-memory .hint").text
        assert total.endswith(f"{psutil.virtual_memory().total / 2**30:.1f} GiB in use"), total
        assert b.css('header nav a[href="#/node"]').get_attribute("aria-current") == "page"
        b.wait_css("#notify-targets tbody tr")
        row = b.css('#notify-targets tr[data-name="ops"]')
        assert "rollout.*" in row.text and "api" in row.text
        b.click('#notify-targets tr[data-name="ops"] button')
        got = await hook.wait(1, timeout=10)  # the page's Test button, through the API
        assert got[0].json()["kind"] == "notify.test"
        b.wait_text('#notify-targets tr[data-name="ops"]', "1")
        b.wait_text("#node-network .node-value", "/s", timeout=15)  # a rate after 2 reads
        b.screenshot("16-node")
        assert b.console_errors() == []
