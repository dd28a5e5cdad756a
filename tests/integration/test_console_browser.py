"""The console in a browser: a crash-looping deployment is shown as failed, in red, with why.

Issue 19's browser test: a deployment whose image exits at once must show
``errored`` and its reason ("crash loop: …") in red within 30 s of the
create, in its Deployments list row and in its manage page's header, at
1400 and 400 px. The time to red is printed (``-s``). Screenshots:
``test-artifacts/dashboard/console-crashloop-*.png``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration import test_console as console
from tests.integration import test_dashboard as walk
from tests.integration.test_dashboard import Site, login
from tests.integration.test_dashboard_console import overflow, set_width, shot
from tests.support.browser import Browser
from tests.support.daemon import Api

site = walk.site
api = walk.api
browser = walk.browser
crash_image = console.crash_image

pytestmark = pytest.mark.docker

RED = """
const c = getComputedStyle(arguments[0]).color.match(/[\\d.]+/g).map(Number);
return c[0] >= 150 && c[1] <= 90 && c[2] <= 90;
"""


def _row_reason(b: Browser, name: str) -> str | None:
    """The list row's visible reason once its badge says errored; None before."""
    rows = [r for r in b.all("#deployment-rows tr") if r.text.startswith(name)]
    if not rows:
        return None
    if not rows[0].find_elements("css selector", ".badge.status-errored"):
        return None
    found = rows[0].find_elements("css selector", ".status-reason")
    return found[0].text if found and found[0].is_displayed() else None


async def test_a_crash_loop_is_shown_as_failed_with_its_reason_within_30s(
    site: Site, browser: Browser, api: Api, new_name: Any, crash_image: tuple[str, str]
) -> None:
    b = browser
    login(b, site)
    name = new_name("crashui")
    image, tag = crash_image
    started = time.monotonic()
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, "image": image, "tag": tag, "ports": {"80": "http"}},
    )
    b.wait_text("#deployment-rows", name)
    reason = b.wait("the row in red", lambda: _row_reason(b, name), timeout=45)
    took = time.monotonic() - started
    print(f"crash loop shown errored in the list {took:.1f}s after the create")
    assert took <= 30, f"{took:.1f}s to red"
    assert "crash loop" in reason and "exited with code 3" in reason, reason
    row = next(r for r in b.all("#deployment-rows tr") if r.text.startswith(name))
    assert b.js(RED, row.find_element("css selector", ".status-reason"))
    assert b.js(RED, row.find_element("css selector", ".badge"))
    assert "deploying" not in row.text

    # The manage page's header says the same, in red, above every tab.
    b.click(f'#deployment-rows a.name[href="#/d/{name}"]')
    header = b.wait_text("#deployment-status .badge.status-errored", "errored")
    shown = b.wait_text("#deployment-reason", "crash loop")
    assert "exited with code 3" in shown.text, shown.text
    assert b.js(RED, header) and b.js(RED, shown)
    b.wait_text("#overview-status", "crash loop")
    # Its events say each thing once: "status errored: …", not "status status errored".
    events = b.wait_text("#overview-events", "errored: crash loop").text
    assert "status status" not in events, events

    # The same at phone width, without sideways scrolling.
    for width, screen in ((400, ""), (400, f"d/{name}"), (1400, f"d/{name}")):
        set_width(b, width)
        b.get(f"{site.base}/ui/#/{screen}")
        if screen:
            b.wait_text("#deployment-reason", "crash loop")
        else:
            b.wait("the row in red", lambda: _row_reason(b, name))
        state = overflow(b)
        assert state["scroll"] <= state["inner"], (screen, width, state)
        shot(b, f"crashloop-{width}-{'manage' if screen else 'list'}", width)
    assert b.console_errors() == []
