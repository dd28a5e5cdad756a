"""The dashboard end to end: a real daemon, the real Docker engine, headless Chromium.

The browser (tests/support/browser.py) runs in a network namespace of its own
and reaches the daemon's API port and proxy port through forwarders, so the
bridges and veths Docker adds for each deployment never reset its requests.
Screenshots of every screen go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import subprocess
import time
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.support import dashboard_site
from tests.support.browser import ARTIFACTS, Browser
from tests.support.daemon import Api, containers_of, docker_json
from tests.support.dashboard_site import (
    CSRF_COOKIE,
    PASSWORD,
    REPO,
    SESSION_COOKIE,
    TOKEN,
    Site,
    deployed,
    docker_exec,
    login,
    proxied,
    tab,
    unlabelled_inputs,
    wait_for,
)
from tests.support.waits import until

# serial: a render-time budget (scripts/test runs these alone, after the parallel part).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

# The daemon with the dashboard on, its API client and the browser (pytest fixtures).
site = dashboard_site.site
api = dashboard_site.api
browser = dashboard_site.browser

# --- the end-to-end walk through every screen ---------------------------------------


async def test_dashboard_end_to_end(site: Site, browser: Browser, api: Api, new_name: Any) -> None:
    b = browser
    name = new_name("dash")
    tag = f"moving-{name}"
    v1_id = docker_json("image", "inspect", f"{REPO}:v1")[0]["Id"]
    v2_id = docker_json("image", "inspect", f"{REPO}:v2")[0]["Id"]
    subprocess.run(["docker", "tag", f"{REPO}:v1", f"{REPO}:{tag}"], check=True)
    try:
        await _walk(site, b, api, name, tag, v1_id, v2_id)
    finally:
        subprocess.run(["docker", "rmi", f"{REPO}:{tag}"], capture_output=True, check=False)


async def _walk(
    site: Site, b: Browser, api: Api, name: str, tag: str, v1_id: str, v2_id: str
) -> None:
    # No session: the app sends the browser to the login page.
    b.get(site.base + "/ui/")
    b.wait("the login page", lambda: b.url.endswith("/ui/login"))
    b.fill("#password", "not the password")
    b.click("#login-submit")
    assert "Wrong password" in b.wait_css("#login-message").text
    b.screenshot("01-login")
    b.fill("#password", PASSWORD)
    b.click("#login-submit")
    b.wait_text("#list-summary", "deployments")
    assert set(b.cookies()) >= {SESSION_COOKIE, CSRF_COOKIE}
    assert b.cookies()[SESSION_COOKIE]["httpOnly"] is True
    assert b.cookies()[SESSION_COOKIE]["secure"] is True
    assert b.cookies()[SESSION_COOKIE]["sameSite"] == "Strict"
    assert unlabelled_inputs(b) == []

    # Create Deployment, step 1 (the button is reachable from the keyboard).
    b.js("document.getElementById('create-button').focus()")
    b.css("#create-button").send_keys(Keys.ENTER)
    b.wait_css("#create-form")
    b.fill('[data-field="name"]', name)
    b.fill('[data-field="image"]', REPO)
    b.fill('[data-field="tag"]', tag)
    assert unlabelled_inputs(b) == []
    b.screenshot("02-create-step1")
    b.click("#step-next")

    # Step 2: a bad port first; the API's message appears next to the port.
    port = b.wait_css('fieldset[data-field="ports"] input.port')
    port.clear()
    port.send_keys("99999")
    b.click('fieldset[data-field="env"] button.add')
    b.fill('fieldset[data-field="env"] input.env-name', "GREETING")
    b.fill('fieldset[data-field="env"] input.env-value', "hello")
    b.click('fieldset[data-field="config_mounts"] button.add')
    b.fill("input.config-name", "app.conf")
    b.fill("textarea.config-content", "greeting=one")
    b.click("#step-next")
    error = b.wait_css('fieldset[data-field="ports"] .field-error')
    assert "port must be a number from 1 to 65535" in error.text
    assert "ports.99999" not in error.text  # next to the port's input, in the form's words
    assert port.get_attribute("aria-invalid") == "true"
    assert b.css('fieldset.step[data-step="2"]').is_displayed()  # still on step 2
    assert unlabelled_inputs(b) == []
    b.screenshot("03-create-step2-error")
    port.clear()
    port.send_keys("80")
    b.click("#step-next")

    # Step 3: the estimated cost follows the resources (1 CPU at 10 + 0.5 GiB at 4).
    b.wait_css('fieldset.step[data-step="3"]')
    b.wait_text("#estimated-cost", "USD 12.00 per month")
    b.fill('[data-field="resources.cpu"]', "0.5")
    b.wait_text("#estimated-cost", "USD 7.00 per month")
    assert b.all('fieldset[data-field="ports"] .field-error') == []
    assert unlabelled_inputs(b) == []
    b.screenshot("04-create-step3")
    b.click("#step-next")  # "Create"

    # The manage screen; the deployment goes running.
    b.wait("the manage screen", lambda: f"#/d/{name}" in b.url)
    b.wait_text("#deployment-status", "running", timeout=60)
    b.wait_text("#deployment-instances", "1/1 instances ready")
    created = await api.ok("GET", f"/v1/deployments/{name}")
    assert created["spec"]["resources"]["cpu"] == 0.5
    assert created["spec"]["env"] == {"GREETING": "hello"}
    assert created["spec"]["tag"] == tag
    tab(b, "details")  # the settings; the overview comes first
    b.wait_text("#immutable-tag", tag)
    assert unlabelled_inputs(b) == []
    b.screenshot("05-manage-details")

    # Tabs follow the arrow keys.
    b.css("#tab-details").send_keys(Keys.ARROW_RIGHT)
    b.wait("the URLs tab", lambda: b.css("#tab-urls").get_attribute("aria-selected") == "true")

    # URLs: open the default URL, add and remove a managed URL.
    link = b.wait_css("#default-urls a")
    url = link.get_attribute("href")
    assert url == f"http://80-{name}.{site.daemon.base_domain}:{site.daemon.proxy_port}/"
    status, body = await proxied(site, site.daemon.host(name))
    assert status == 200 and "hello from v1" in body
    b.fill('[data-field="domain"]', f"www-{name}.{site.daemon.base_domain}")
    b.click('#url-form [data-field="http_redirect"]')  # plain HTTP is served, not redirected
    b.click("#url-form button[type=submit]")
    b.wait_text("#managed-urls tr", f"www-{name}")
    assert await wait_for(
        "the managed URL to route",
        lambda: _body_if_ok(site, f"www-{name}.{site.daemon.base_domain}"),
        timeout=15,
    )
    b.wait_text("#managed-urls tr", "issued")  # the local CA signs *.localhost names
    assert unlabelled_inputs(b) == []
    b.screenshot("06-urls")
    b.click(f'#managed-urls button[aria-label^="Remove www-{name}"]')
    b.wait_text("#managed-urls", "No managed URLs.")
    b.get(url)  # through patrd's proxy, in the browser
    b.wait("the deployment's page", lambda: "hello from v1" in b.driver.page_source)
    b.get(f"{site.base}/ui/#/d/{name}/logs")

    # Logs: the tail, then a line written now arrives while following.
    b.wait_css("#log-output")
    b.wait_text("#log-output", f"start {name}-0 revision 1")
    [cid] = containers_of(name, all_states=False)
    marker = f"live-line-{time.time_ns()}"
    docker_exec(cid, "sh", "-c", f"echo {marker} > /proc/1/fd/1")
    b.wait_text("#log-output", marker, timeout=15)
    Select(b.css("#log-instance")).select_by_value(f"{name}-0")
    b.wait_text("#log-output", marker, timeout=15)
    instances = {el.get_attribute("data-instance") for el in b.all("#log-output .logline")}
    assert instances == {f"{name}-0"}
    assert unlabelled_inputs(b) == []
    b.screenshot("07-logs")

    # Config mounts: edit the file; the running container sees it at once.
    tab(b, "config")
    b.wait_text("#config-files", "app.conf").find_element("css selector", "button").click()
    editor = b.wait_css("#config-editor")
    b.wait("the file's contents", lambda: editor.get_attribute("value") == "greeting=one")
    assert docker_exec(cid, "cat", "/etc/config/app.conf") == "greeting=one"
    editor.clear()
    editor.send_keys("greeting=two")
    b.click("#config-save")
    await until(
        lambda: docker_exec(cid, "cat", "/etc/config/app.conf") == "greeting=two",
        10,
        "the config edit live",
        interval=0.05,
    )
    assert containers_of(name, all_states=False) == [cid]  # no restart
    b.wait_text("#toast", "live in /etc/config/app.conf")
    assert unlabelled_inputs(b) == []
    b.screenshot("08-config")

    # Image history: move the tag to v2 and change the env: the pinned image
    # stays (v1). Redeploy pulls the tag again and rolls v2 out; then revert
    # to v1 from the history tab.
    subprocess.run(["docker", "tag", f"{REPO}:v2", f"{REPO}:{tag}"], check=True)
    before = (await api.ok("GET", f"/v1/deployments/{name}"))["revision"]  # the config edit's
    tab(b, "details")
    b.fill("#details-form input.env-value", "hello2")
    b.click("#details-save")
    b.wait_text("#toast", f"Saved: revision {before + 1}")
    await wait_for("the env change deployed", lambda: deployed(api, name, before + 1))
    assert "hello from v1" in (await proxied(site, site.daemon.host(name)))[1], "still pinned"
    b.click("#redeploy-button")
    assert "Redeploy" in b.accept_confirm()
    b.wait_text("#toast", f"revision {before + 2} pins")
    await wait_for("the redeploy deployed", lambda: deployed(api, name, before + 2))
    assert "hello from v2" in (await proxied(site, site.daemon.host(name)))[1]
    tab(b, "history")
    b.wait_text(f'#history-rows tr[data-revision="{before + 2}"]', "deployed")
    b.wait_text(f'#history-rows tr[data-revision="{before + 2}"]', "redeploy")
    button = b.wait_css(f'#history-rows button.revert[data-image-id="{v1_id}"]')
    assert b.all(f'#history-rows button.revert[data-image-id="{v2_id}"]') == []  # running now
    b.screenshot("09-history-before-revert")
    button.click()
    assert "Revert" in b.accept_confirm()
    b.wait_text("#toast", f"revision {before + 3}")
    await wait_for("the revert deployed", lambda: deployed(api, name, before + 3))
    b.wait_text(f'#history-rows tr[data-revision="{before + 3}"]', "deployed")
    [cid] = containers_of(name, all_states=False)
    assert docker_json("inspect", cid)[0]["Image"] == v1_id
    assert "hello from v1" in (await proxied(site, site.daemon.host(name)))[1]
    b.screenshot("10-history-reverted")

    # Metrics: charts once the sampler has points.
    tab(b, "metrics")
    b.wait_css("#metrics-charts svg.chart", timeout=30)
    assert len(b.all("#metrics-charts svg.chart")) == 3
    b.screenshot("11-metrics")

    # Secrets: the value is write-only and never comes back to the page.
    tab(b, "secrets")
    secret_value = f"s3cret-value-{time.time_ns()}"
    b.fill('#secret-new [data-field="name"]', f"pw-{name}")
    b.fill('#secret-new [data-field="value"]', secret_value)
    b.click("#secret-new button[type=submit]")
    b.wait_text("#secret-rows", f"pw-{name}")
    assert b.css('#secret-new [data-field="value"]').get_attribute("value") == ""
    assert secret_value not in b.driver.page_source
    assert unlabelled_inputs(b) == []
    b.screenshot("12-secrets")

    # Stop and start.
    b.click("#start-stop")
    assert "Stop" in b.accept_confirm()
    b.wait_text("#deployment-status", "stopped", timeout=30)
    b.wait_text("#start-stop", "Start")
    b.click("#start-stop")
    b.wait_text("#deployment-status", "running", timeout=60)

    # Delete asks for the typed name.
    b.click("#delete-button")
    typed = b.wait_css("#delete-confirm-input")
    typed.send_keys(name[:-1])
    assert not b.css("#delete-confirm").is_enabled()
    typed.send_keys(name[-1])
    assert b.css("#delete-confirm").is_enabled()
    b.screenshot("13-delete-confirm")
    b.click("#delete-confirm")
    b.wait("the list", lambda: b.url.endswith("#/"))
    await api.wait_gone(name)
    b.wait("the row to go", lambda: not b.all(f'#deployment-rows tr[data-name="{name}"]'))
    b.screenshot("14-list-after-delete")

    # No script errors (expected 4xx answers, like the wrong password and the
    # bad port, are logged by Chromium as network errors: those are fine).
    errors = [m for m in b.console_errors() if m.get("source") != "network"]
    assert errors == [], errors


async def _body_if_ok(site: Site, host: str) -> str | None:
    status, body = await proxied(site, host)
    return body if status == 200 else None


# --- speed --------------------------------------------------------------------------------


async def test_list_page_with_100_deployments_renders_within_200ms(
    site: Site, browser: Browser, api: Api, new_name: Any
) -> None:
    names = [new_name("many") for _ in range(100)]
    gate = asyncio.Semaphore(8)

    async def create(name: str) -> None:
        async with gate:
            await api.ok(
                "POST",
                "/v1/deployments",
                {
                    "name": name,
                    "image": REPO,
                    "tag": "v1",
                    "ports": {"80": "http"},
                    "deploy_on_create": False,
                },
            )

    await asyncio.gather(*(create(n) for n in names))
    b = browser
    login(b, site)
    b.wait("100 rows", lambda: len(b.all("#deployment-rows tr")) == 100)
    samples = []
    for _ in range(5):
        b.get(site.base + "/ui/")
        b.wait("the list", lambda: b.js("return document.body.dataset.listRendered") == "1")
        timing = b.js(
            """
            const nav = performance.getEntriesByType('navigation')[0];
            const mark = performance.getEntriesByName('patrd:list-rendered')[0];
            return {rendered_ms: mark.startTime, response_end_ms: nav.responseEnd,
                    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                    rows: document.querySelectorAll('#deployment-rows tr').length};
            """
        )
        assert timing["rows"] == 100
        samples.append(timing)
    rendered = sorted(s["rendered_ms"] for s in samples)
    median = statistics.median(rendered)
    api_ms = []
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            started = time.perf_counter()
            async with http.get(
                f"{site.base}/v1/deployments", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert len((await resp.json())["deployments"]) == 100
            api_ms.append((time.perf_counter() - started) * 1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "list-100-timing.json").write_text(
        json.dumps(
            {
                "median_rendered_ms": median,
                "median_api_list_ms": statistics.median(api_ms),
                "samples": samples,
            },
            indent=2,
        )
    )
    print(
        f"list page with 100 deployments: rows rendered at {rendered} ms (median {median}); "
        f"GET /v1/deployments median {statistics.median(api_ms):.1f} ms"
    )
    b.screenshot("15-list-100-deployments")
    assert median < 200, samples

    for name in names:
        await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    for name in names:
        await api.wait_gone(name)


# --- security --------------------------------------------------------------------------------


def _cookies(resp: aiohttp.ClientResponse) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for value in resp.headers.getall("Set-Cookie", []):
        jar.load(value)
    return {k: m.value for k, m in jar.items()}


async def test_no_session_csrf_and_login_rate_limit(site: Site) -> None:
    base = site.base
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        # No session: the app redirects to the login page; the API says 401.
        async with http.get(f"{base}/ui/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/ui/login"
        async with http.get(f"{base}/v1/deployments") as resp:
            assert resp.status == 401
        async with http.get(f"{base}/ui/login") as resp:
            assert resp.status == 200
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Frame-Options"] == "DENY"

        async with http.post(
            f"{base}/ui/login", data={"password": PASSWORD}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            got = _cookies(resp)
        cookie = f"{SESSION_COOKIE}={got[SESSION_COOKIE]}"
        csrf = got[CSRF_COOKIE]
        body = {"name": "csrf-probe", "image": REPO, "tag": "v1", "ports": {"80": "http"}}
        async with http.get(f"{base}/v1/deployments", headers={"Cookie": cookie}) as resp:
            assert resp.status == 200
        # A state-changing request without the CSRF token: 403, nothing created.
        for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": "forged"}):
            async with http.post(f"{base}/v1/deployments", json=body, headers=headers) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"] == "forbidden"
        async with http.post(
            f"{base}/v1/deployments?dry_run=true",
            json=body,
            headers={"Cookie": cookie, "X-CSRF-Token": csrf},
        ) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/v1/deployments/csrf-probe", headers={"Cookie": cookie}) as r:
            assert r.status == 404
        # Logout ends the session.
        async with http.post(
            f"{base}/ui/logout",
            headers={"Cookie": cookie, "X-CSRF-Token": csrf},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        async with http.get(f"{base}/v1/deployments", headers={"Cookie": cookie}) as resp:
            assert resp.status == 401

    # Wrong passwords from one address: five 401s, then 429 even for the right one.
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=other, cookie_jar=aiohttp.DummyCookieJar()) as http:
        for _ in range(5):
            async with http.post(f"{base}/ui/login", data={"password": "guess"}) as resp:
                assert resp.status == 401
        for password in ("guess", PASSWORD):
            async with http.post(f"{base}/ui/login", data={"password": password}) as resp:
                assert resp.status == 429
                assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # Another address is not locked out.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.post(f"{base}/ui/login", data={"password": PASSWORD}, allow_redirects=False) as resp,
    ):
        assert resp.status == 303


async def test_admin_hostname_over_https_through_the_proxy(site: Site, api: Api) -> None:
    """A managed URL proxying to the API's TCP port serves the dashboard over HTTPS."""
    domain = f"admin.{site.daemon.base_domain}"
    await api.ok(
        "POST",
        "/v1/urls",
        {"domain": domain, "target": {"proxy": site.base}, "http_redirect": True},
    )

    async def issued() -> bool:
        urls = (await api.ok("GET", "/v1/urls"))["urls"]
        return any(u["domain"] == domain and u["tls"]["status"] == "issued" for u in urls)

    await wait_for("the admin hostname's certificate", issued, timeout=30)
    ca = site.daemon.data_dir / "tls" / "local-ca" / "ca.pem"
    context = ssl.create_default_context(cafile=str(ca))
    resolver = _StaticResolver(domain)
    connector = aiohttp.TCPConnector(ssl=context, resolver=resolver)
    origin = f"https://{domain}:{site.daemon.https_port}"
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        async with http.get(f"{origin}/ui/", allow_redirects=False) as resp:
            assert resp.status == 302
        async with http.post(
            f"{origin}/ui/login",
            data={"password": PASSWORD},
            headers={"Origin": origin},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()
            got = _cookies(resp)
            assert "Secure" in resp.headers.getall("Set-Cookie")[0]
        cookie = f"{SESSION_COOKIE}={got[SESSION_COOKIE]}"
        async with http.get(f"{origin}/v1/deployments", headers={"Cookie": cookie}) as resp:
            assert resp.status == 200
        async with http.get(f"{origin}/ui/", headers={"Cookie": cookie}) as resp:
            assert resp.status == 200
            assert 'src="/ui/static/app.js"' in await resp.text()
        # A form posted from another site is refused even behind the proxy.
        async with http.post(
            f"{origin}/ui/login",
            data={"password": PASSWORD},
            headers={"Origin": "https://evil.example"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 403


class _StaticResolver(aiohttp.abc.AbstractResolver):
    """``domain`` → 127.0.0.1, whatever the system resolver says."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def resolve(
        self, host: str, port: int = 0, family: int = 0
    ) -> list[aiohttp.abc.ResolveResult]:
        assert host == self.domain, host
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": 2,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        return None
