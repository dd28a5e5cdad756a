"""The console in a browser: crash loops in red with their reason; create at a digest.

Issue 19's browser test: a deployment whose image exits at once must show
``errored`` and its reason ("crash loop: …") in red within 30 s of the
create, in its Deployments list row and in its manage page's header, at
1400 and 400 px. The time to red is printed (``-s``). Screenshots:
``test-artifacts/dashboard/console-crashloop-*.png``.

And the Create form takes ``repo:tag@sha256:…`` as docker writes it: a
digest the tag no longer points at is refused next to the Digest field
(nothing left behind); the one it points at is created and runs (real
digests from the node registry, as in test_pinned_releases.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import dashboard_site
from tests.support.browser import Browser
from tests.support.daemon import Api, Daemon, containers_of, free_port, wait_tcp_api
from tests.support.dashboard_site import PASSWORD, TOKEN, Site, login
from tests.support.releases import history, image_id, image_of, skopeo_push
from tests.support.screens import overflow, set_width, shot

site = dashboard_site.site
api = dashboard_site.api
browser = dashboard_site.browser

# serial: a crash loop shown within 30 s (scripts/test runs these alone, after the parallel part).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

RED = """
const c = getComputedStyle(arguments[0]).color.match(/[\\d.]+/g).map(Number);
return c[0] >= 150 && c[1] <= 90 && c[2] <= 90;
"""


def _row_reason(b: Browser, name: str) -> str | None:
    """The list row's visible reason once its badge says errored; None before."""
    rows = b.all(f'#deployment-rows tr[data-name="{name}"]')
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
    try:
        reason = b.wait("the row in red", lambda: _row_reason(b, name), timeout=45)
    except AssertionError as exc:
        shown = await api.ok("GET", f"/v1/deployments/{name}")
        raise AssertionError(f"API: {shown['status']} {shown['status_reason']!r}") from exc
    took = time.monotonic() - started
    print(f"crash loop shown errored in the list {took:.1f}s after the create")
    assert took <= 30, f"{took:.1f}s to red"
    assert "crash loop" in reason and "exited with code 3" in reason, reason
    row = b.css(f'#deployment-rows tr[data-name="{name}"]')
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


async def test_the_overview_has_cpu_and_memory_and_empty_logs_say_why(
    site: Site, browser: Browser, api: Api, new_name: Any
) -> None:
    """The overview card's CPU/memory sparklines (issue 19: "CPU/memory sparkline"), and the
    Logs tab of a deployment with no instance saying why there is nothing."""
    b = browser
    login(b, site)
    name, missing = new_name("spark"), new_name("nopull")
    await api.ok(
        "POST",
        "/v1/deployments",
        {
            "name": name,
            "image": "patrd-test/web",
            "tag": "v1",
            "ports": {"80": "http"},
            "resources": {"cpu": 0.5, "memory_mb": 256},
        },
    )
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": missing, "image": "patrd-test/web", "tag": "no-such-tag", "ports": {"80": "http"}},
    )
    await api.wait_status(name, "running")

    for width in (400, 1400):
        set_width(b, width)
        b.get(f"{site.base}/ui/#/d/{name}")
        b.wait("the sparklines", lambda: b.all("#overview-usage svg.sparkline path"), timeout=60)
        usage = b.css("#overview-usage")
        assert len(b.all("#overview-usage svg.sparkline")) == 2
        cpu, memory = b.css("#overview-cpu").text, b.css("#overview-memory").text
        assert cpu.startswith("CPU ") and "of 0.5 cores" in cpu, cpu
        assert memory.startswith("memory ") and memory.endswith("of 256 MiB"), memory
        assert "d=" not in usage.text
        path = b.css("#overview-memory svg.sparkline path").get_attribute("d")
        assert path and path.startswith("M"), path
        state = overflow(b)
        assert state["scroll"] <= state["inner"], (width, state)
        shot(b, f"overview-usage-{width}", width)

    # The charts: a legend naming each series, network in and out drawn apart,
    # axis text at a readable size on the screen (not 9 px).
    b.get(f"{site.base}/ui/#/d/{name}/metrics")
    b.wait("three charts", lambda: len(b.all("#metrics-charts figure.chart-box")) == 3, timeout=60)
    network = b.all("#metrics-charts figure.chart-box")[2]
    legend = [li.text for li in network.find_elements("css selector", ".legend li")]
    assert [t.split(" ")[0] for t in legend] == ["in", "out"], legend
    lines = network.find_elements("css selector", "svg.chart .line")
    colours = {b.js("return getComputedStyle(arguments[0]).stroke", el) for el in lines}
    assert len(lines) >= 2 and len(colours) == 2, colours
    heights = b.js(
        "return [...document.querySelectorAll('#metrics-charts svg.chart .axis')]"
        ".map(t => t.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 11, heights

    shown = await api.wait_status(missing, "errored", timeout=60)
    assert shown["instances"] == []
    b.get(f"{site.base}/ui/#/d/{missing}/logs")
    said = b.wait_text("#log-state", "No log lines", timeout=30).text
    assert said.startswith(f"No log lines: {missing} has no instances (errored: "), said
    assert shown["status_reason"].split(";")[0] in said, (said, shown["status_reason"])
    shot(b, "logs-empty-why-1400", 1400)

    # Empty config-file and volume rows are flagged, not dropped.
    b.get(f"{site.base}/ui/#/create")
    b.fill('[data-field="name"]', new_name("words"))
    b.fill('[data-field="image"]', "patrd-test/web:v1")
    b.click("#step-next")
    b.wait("step 2", lambda: b.css('fieldset.step[data-step="2"]').is_displayed())
    for rows in ("config_mounts", "volumes"):
        b.click(f'fieldset[data-field="{rows}"] button.add')
    b.click("#step-next")
    flagged = b.wait(
        "two empty rows",
        lambda: [e.text for e in b.all("#create-form .field-error")] or None,
    )
    assert sorted(flagged) == [
        "Empty file row: fill it in or remove it.",
        "Empty volume row: fill it in or remove it.",
    ], flagged
    assert b.css('fieldset.step[data-step="2"]').is_displayed()
    for rows in ("config_mounts", "volumes"):
        b.click(f'fieldset[data-field="{rows}"] .rows button.icon')
    # An error the API finds speaks the form's words, not JSON paths.
    b.click("#step-next")
    b.wait("step 3", lambda: b.css('fieldset.step[data-step="3"]').is_displayed())
    b.fill('[data-field="scale.min"]', "3")
    b.fill('[data-field="scale.max"]', "2")
    b.click("#step-next")  # Create
    said = b.wait_text('.field-error[data-for="scale.max"]', "at least").text
    assert said == "must be at least Minimum instances (3)", said
    assert b.css('[data-field="scale.max"]').get_attribute("aria-invalid") == "true"
    expected = ("status of 422",)  # the API's answers to the bad scale
    assert [m for m in b.console_errors() if not any(e in m["message"] for e in expected)] == []


# --- create at a digest ----------------------------------------------------------------


@pytest.fixture
def registry_site(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[Site]:
    """A daemon with the dashboard on and the node registry running."""
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "admin-password").write_text(PASSWORD + "\n")
    daemon = Daemon(
        tmp_path,
        config={
            "api": {"tcp_listen": f"127.0.0.1:{port}", "token_file": str(tmp_path / "token")},
            "dashboard": {"enabled": True, "admin_password_file": str(tmp_path / "admin-password")},
            "registry": {
                "enabled": True,
                "listen": f"127.0.0.1:{free_port()}",
                "webhook_listen": f"127.0.0.1:{free_port()}",
            },
        },
    )
    daemon.start()
    try:
        wait_tcp_api(daemon, port)
        yield Site(daemon, port)
    finally:
        daemon.stop()


@pytest.fixture
async def registry_api(registry_site: Site) -> AsyncIterator[Api]:
    async with Api(registry_site.daemon) as client:
        yield client


@pytest.fixture
def registry_browser(registry_site: Site) -> Iterator[Browser]:
    with Browser(registry_site.ports) as b:
        yield b


def _create(b: Browser, site: Site, name: str, image: str) -> None:
    """Fill the Create form's three steps with ``image`` as typed, and press Create."""
    b.get(f"{site.base}/ui/#/create")
    b.wait_css("#create-form")
    b.fill('[data-field="name"]', name)
    b.fill('[data-field="registry"]', "local")
    b.fill('[data-field="image"]', image)
    b.click("#step-next")
    b.wait("step 2", lambda: b.css('fieldset.step[data-step="2"]').is_displayed())
    b.click("#step-next")
    b.wait("step 3", lambda: b.css('fieldset.step[data-step="3"]').is_displayed())
    b.click("#step-next")


async def test_the_create_form_takes_a_digest_and_checks_it_against_the_tag(
    registry_site: Site, registry_browser: Browser, registry_api: Api, new_name: Any
) -> None:
    site, b, api = registry_site, registry_browser, registry_api
    d = site.daemon
    repo = f"apps/{new_name('uidg')}"
    d1 = skopeo_push(d, "patrd-test/web:v1", repo, "stable")
    d2 = skopeo_push(d, "patrd-test/web:v2", repo, "stable")  # stable moved on to v2
    login(b, site)

    # The old digest: refused next to the Digest field, on step 1; nothing left behind.
    old = new_name("uiold")
    _create(b, site, old, f"{repo}:stable@{d1}")
    error = b.wait_text('.field-error[data-for="digest"]', "points at", timeout=60)
    assert f"points at {d2}, not this digest; nothing was started" in error.text, error.text
    assert b.css('[data-field="digest"]').get_attribute("aria-invalid") == "true"
    assert b.css('fieldset.step[data-step="1"]').is_displayed()
    assert b.css('[data-field="image"]').get_attribute("value") == repo
    assert b.css('[data-field="tag"]').get_attribute("value") == "stable"
    assert b.css('[data-field="digest"]').get_attribute("value") == d1
    assert b.css("#f-deploy-on-push").is_selected() is False  # a digest stays put
    shot(b, "digest-refused-1400", 1400)
    await api.wait_gone(old)
    assert containers_of(old) == []

    # The digest the tag points at: created, started, running that image.
    name = new_name("uinew")
    started = time.monotonic()
    _create(b, site, name, f"{repo}:stable@{d2}")
    b.wait("the manage page", lambda: b.url.endswith(f"#/d/{name}"), timeout=120)
    print(f"created at a digest in the browser in {time.monotonic() - started:.1f}s")
    shown = await api.wait_status(name, "running", timeout=60)
    assert shown["spec"]["tag"] == "stable" and shown["spec"]["deploy_on_push"] is False
    assert image_of(d, name) == {image_id("patrd-test/web:v2")}
    entry = next(h for h in await history(api, name) if h["revision"] == shown["revision"])
    assert entry["digest"] == d2, entry
    b.wait_text("#overview-release", d2.removeprefix("sha256:")[:12])
    assert b.console_errors() == []
