"""The dashboard as a new user meets it: phone width, the overview card first.

One browser session walks every screen at 400 px and at 1400 px (Chromium
sessions are slow on a loaded machine). Screenshots go to
``test-artifacts/dashboard/console-*.png``.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from tests.support import dashboard_site
from tests.support.browser import Browser
from tests.support.daemon import Api, docker_json
from tests.support.dashboard_site import (
    PASSWORD,
    REPO,
    SESSION_COOKIE,
    Site,
    deployed,
    proxied,
    tab,
    wait_for,
)
from tests.support.screens import overflow, set_width, shot

# The end-to-end walk's fixtures: a daemon with the dashboard on, its API, a browser.
site = dashboard_site.site
api = dashboard_site.api
browser = dashboard_site.browser

pytestmark = pytest.mark.docker

SCREENS = (
    "",
    "create",
    "node",
    "d/{name}",
    "d/{name}/urls",
    "d/{name}/logs",
    "d/{name}/metrics",
    "d/{name}/history",
    "d/{name}/config",
    "d/{name}/secrets",
    "d/{name}/settings",
    "urls",
    "certs",
    "secrets",
    "audit",
)


FOCUS_CONTRAST = """
const button = document.getElementById('logout');
button.focus({focusVisible: true});
const parse = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
const lum = (c) => {
  const [r, g, b] = parse(c).map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ring = lum(getComputedStyle(button).outlineColor);
const back = lum(getComputedStyle(document.querySelector('header.top')).backgroundColor);
return (Math.max(ring, back) + 0.05) / (Math.min(ring, back) + 0.05);
"""


async def test_every_screen_fits_a_phone_and_the_overview_comes_first(
    site: Site, browser: Browser, api: Api, new_name: Any
) -> None:
    name = new_name("con")
    tag = f"moving-{name}"
    subprocess.run(["docker", "tag", f"{REPO}:v1", f"{REPO}:{tag}"], check=True)
    try:
        await _walk(site, browser, api, name, tag)
    finally:
        subprocess.run(["docker", "rmi", f"{REPO}:{tag}"], capture_output=True, check=False)


async def _walk(site: Site, b: Browser, api: Api, name: str, tag: str) -> None:
    body: dict[str, Any] = {
        "name": name,
        "image": REPO,
        "tag": tag,
        "ports": {"80": "http"},
        "env": {"A_RATHER_LONG_ENVIRONMENT_VARIABLE_NAME": "and-a-long-value-" * 4},
    }
    await api.ok("POST", "/v1/deployments", body)
    await api.wait_status(name, "running")
    # Node-wide things the new screens list: a URL that points at no
    # deployment (its certificate comes from the local CA) and a secret.
    elsewhere = f"go-{name}.{site.daemon.base_domain}"
    await api.ok(
        "POST", "/v1/urls", {"domain": elsewhere, "target": {"redirect": "https://example.com/"}}
    )
    await api.ok("POST", "/v1/secrets", {"name": f"key_{name[-8:]}", "value": "s3cret-value"})

    # A deep link survives the login: the app comes back on that screen.
    b.get(f"{site.base}/ui/#/d/{name}/history")
    b.wait("the login page", lambda: "/ui/login" in b.url)
    b.fill("#password", PASSWORD)
    b.click("#login-submit")
    b.wait("the deep link", lambda: b.url.endswith(f"/ui/#/d/{name}/history"))
    b.wait_css("#history-rows tr")
    # ... and the end of the session: logged out while on a screen, back on it after.
    b.get(f"{site.base}/ui/#/d/{name}/logs")
    b.wait_css("#log-output")
    b.driver.delete_cookie(SESSION_COOKIE)
    b.wait("the login page", lambda: "/ui/login" in b.url, timeout=30)
    b.fill("#password", PASSWORD)
    b.click("#login-submit")
    b.wait("the same screen", lambda: b.url.endswith(f"/ui/#/d/{name}/logs"))
    b.wait_css("#log-output")
    expired = b.console_errors()  # the 401 that sent the page to the login
    assert expired and all("401" in m["message"] for m in expired), expired
    b.console.clear()

    for width in (400, 1400):
        set_width(b, width)
        for screen in SCREENS:
            path = screen.format(name=name)
            b.get(f"{site.base}/ui/#/{path}")
            b.wait("the screen", lambda: not b.all("main .loading"))
            b.wait_css("main h1")
            if path.startswith("d/"):
                b.wait_text("#deployment-status", "running")
            label = path.replace(f"d/{name}", "manage").replace("/", "-") or "list"
            shot(b, f"{width}-{label}", width)
            state = overflow(b)
            assert state["scroll"] <= state["inner"], (path, width, state)

    # The overview (the first tab): the URL with an Open link, the release running now.
    v1_id = docker_json("image", "inspect", f"{REPO}:v1")[0]["Id"]
    d = await api.ok("GET", f"/v1/deployments/{name}")
    b.get(f"{site.base}/ui/#/d/{name}")
    assert b.wait_css("#tab-overview").get_attribute("aria-selected") == "true"
    b.wait_text("#overview-urls", d["urls"][0])
    assert str(b.css("#overview-urls a").get_attribute("href")).rstrip("/") == d["urls"][0].rstrip(
        "/"
    )
    live = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"][0]
    short = (live["digest"] or live["image_id"]).removeprefix("sha256:")[:12]
    release = b.wait_text("#overview-release", short)
    assert "revision 1" in release.text and "created" in release.text
    b.wait_text("#overview-ready", "1 of 1")

    # Charts: values on keyboard focus, memory on the usage scale or up to the limit.
    b.get(f"{site.base}/ui/#/d/{name}/metrics")
    memory = b.wait(
        "the memory chart", lambda: [*b.all("#metrics-charts svg.chart"), None, None][1], timeout=60
    )
    b.js("arguments[0].focus()", memory)  # as the Tab key would
    ActionChains(b.driver).send_keys(Keys.ARROW_LEFT).perform()
    readout = b.wait_text("#metrics-charts .chart-readout", "used ")
    assert "limit 512 MiB" in readout.text, readout.text
    assert "above this scale" in b.all("#metrics-charts svg.chart")[1].text  # zoomed to usage
    b.wait_text("#metrics-charts .chart-scale button", "Up to the limit").click()
    b.wait(
        "the limit scale",
        lambda: "above this scale" not in b.all("#metrics-charts svg.chart")[1].text,
    )
    shot(b, "1400-metrics", 1400)

    # The node-wide screens, from the header's links.
    b.click('header nav a[href="#/urls"]')
    b.wait_text("#all-urls", elsewhere)
    assert "redirect to https://example.com/" in b.css("#all-urls").text
    b.click('header nav a[href="#/certs"]')
    b.wait_text("#all-certs", elsewhere, timeout=30)
    b.click('header nav a[href="#/secrets"]')
    b.wait_text("#all-secrets", f"key_{name[-8:]}")
    # A deployment's Secrets tab lists only the secrets it uses.
    b.get(f"{site.base}/ui/#/d/{name}/secrets")
    b.wait_text("#secret-rows", "This deployment uses no secrets.")
    assert f"key_{name[-8:]}" not in b.css("#secret-rows").text
    b.click('header nav a[href="#/audit"]')  # the session's scope is write, not admin
    assert "needs the admin scope" in b.wait_css("#needs-scope").text
    shot(b, "1400-audit-needs-admin", 1400)

    # Create, step 1: both missing fields flagged at once; "repo:tag" typed in
    # the image field is split into image and tag.
    b.get(f"{site.base}/ui/#/create")
    b.wait_css("#create-form")
    b.click("#step-next")
    b.wait("both errors", lambda: len(b.all("#create-form .field-error")) == 2)
    assert b.css('[data-field="name"]').get_attribute("aria-invalid") == "true"
    assert b.css('[data-field="image"]').get_attribute("aria-invalid") == "true"
    b.fill('[data-field="image"]', f"{REPO}:v2")
    b.click("#step-next")
    b.wait("one error left", lambda: len(b.all("#create-form .field-error")) == 1)
    assert b.css('[data-field="image"]').get_attribute("value") == REPO
    assert b.css('[data-field="tag"]').get_attribute("value") == "v2"
    assert "name" in b.css("#create-form .field-error").text
    # A digest is split off into its own field; a malformed one is flagged there
    # (a whole one is checked against the tag: tests/integration/test_console_browser.py).
    b.fill('[data-field="image"]', f"{REPO}@sha256:0123456789abcdef")
    b.click("#step-next")
    b.wait("two errors", lambda: len(b.all("#create-form .field-error")) == 2)
    assert b.css('[data-field="digest"]').get_attribute("aria-invalid") == "true"
    assert any("64 lowercase hex" in e.text for e in b.all("#create-form .field-error"))
    assert b.css('[data-field="image"]').get_attribute("value") == REPO
    assert b.css('[data-field="digest"]').get_attribute("value") == "sha256:0123456789abcdef"
    b.fill('[data-field="digest"]', "")
    # The step pills are progress, not buttons: no button look.
    assert b.js(
        "const s = getComputedStyle(document.querySelector('.stepper li:not([aria-current])'));"
        "return s.backgroundColor === 'rgba(0, 0, 0, 0)' && s.cursor !== 'pointer'"
    )
    # Leaving the half-filled form asks first; "stay" keeps it and its text.
    b.js("location.hash = '#/'")
    assert "Leave this page?" in b.dismiss_confirm()
    assert b.url.endswith("#/create")
    assert b.css('[data-field="tag"]').get_attribute("value") == "v2"
    b.click('header nav a[href="#/"]')
    assert "Leave this page?" in b.accept_confirm()
    b.wait_text("#list-summary", "deployments")
    # The focus ring on the dark header has at least 3:1 contrast.
    ratio = b.js(FOCUS_CONTRAST)
    assert ratio >= 3, ratio

    # Settings: a repeated variable name, a value without a name and a repeated
    # port are refused together, next to each row; nothing is saved.
    b.get(f"{site.base}/ui/#/d/{name}/settings")
    b.wait_css("#details-form")
    b.click('#details-form fieldset[data-field="env"] button.add')
    b.click('#details-form fieldset[data-field="env"] button.add')
    b.click('#details-form fieldset[data-field="ports"] button.add')
    names = b.all("#details-form input.env-name")
    values = b.all("#details-form input.env-value")
    names[1].send_keys("A_RATHER_LONG_ENVIRONMENT_VARIABLE_NAME")
    values[2].send_keys("orphan value")
    b.all('#details-form fieldset[data-field="ports"] input.port')[1].send_keys("80")
    b.click("#details-save")
    errors = b.wait(
        "three errors",
        lambda: (
            [e.text for e in b.all("#details-form .field-error")]
            if len(b.all("#details-form .field-error")) == 3
            else None
        ),
    )
    assert any("already used" in e for e in errors), errors
    assert any("has no name" in e for e in errors), errors
    assert any("listed twice" in e for e in errors), errors
    assert not any("[A-Za-z" in e for e in errors), errors
    shot(b, "1400-settings-errors", 1400)
    # Unchanged settings: "No change", and no new revision.
    b.get(f"{site.base}/ui/#/d/{name}")
    b.get(f"{site.base}/ui/#/d/{name}/settings")
    b.wait_css("#details-form input.env-name")
    b.click("#details-save")
    b.wait_text("#toast", "No change")
    assert (await api.ok("GET", f"/v1/deployments/{name}"))["revision"] == 1

    # Redeploy asks first, then pulls the moved tag: v2 rolls out.
    subprocess.run(["docker", "tag", f"{REPO}:v2", f"{REPO}:{tag}"], check=True)
    b.click("#redeploy-button")
    assert "Redeploy" in b.accept_confirm()
    b.wait_text("#toast", "revision 2")
    await wait_for("the redeploy deployed", lambda: deployed(api, name, 2))
    assert "hello from v2" in (await proxied(site, site.daemon.host(name)))[1]
    tab(b, "overview")
    b.wait_text("#overview-release", "revision 2")
    b.wait_text("#overview-release", "Redeploy")
    shot(b, "1400-overview-redeployed", 1400)

    # Revert (by release) asks first, then runs v1 again as revision 3.
    tab(b, "history")
    b.click(f'#history-rows button.revert[data-image-id="{v1_id}"]')
    assert "Revert to revision 1" in b.accept_confirm()
    b.wait_text("#toast", "revision 3")
    await wait_for("the revert deployed", lambda: deployed(api, name, 3))
    assert "hello from v1" in (await proxied(site, site.daemon.host(name)))[1]
    tab(b, "overview")
    b.wait_text("#overview-release", "revert")

    # History: releases first, a settings change folded under its release
    # with what changed (names, not values).
    env = {**body["env"], "NEW_VAR": "not shown"}
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": env})
    await wait_for("the settings change deployed", lambda: deployed(api, name, 4))
    tab(b, "history")
    fold = b.wait_text('#history-rows tr.folded[data-release="3"]', "1 settings change")
    fold.find_element("css selector", "summary").click()
    b.wait_text('#history-rows tr.folded[data-release="3"] li', "revision 4: env NEW_VAR added")
    assert "not shown" not in b.css("#history-rows").text
    assert b.all('#history-rows tr[data-revision="4"]') == []  # folded, not a row of its own
    assert "first release" in b.css('#history-rows tr[data-revision="1"]').text
    shot(b, "1400-history-folded", 1400)
    # No errors but the audit log's expected 403 (the page says "needs the admin scope").
    assert [m for m in b.console_errors() if "/v1/audit" not in m["message"]] == []
