"""Logging in to the dashboard in unit tests: a settable clock, a password, a session."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from patrd.dashboard.web import CSRF_COOKIE, SESSION_COOKIE

PASSWORD = "correct horse battery"
Client = TestClient[web.Request, web.Application]


class Clock:
    """A clock the test moves by hand (``clock.now += 60``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def login(client: Client, password: str = PASSWORD, **headers: str) -> Any:
    return await client.post(
        "/ui/login", data={"password": password}, allow_redirects=False, headers=headers
    )


def cookies_of(resp: Any) -> dict[str, Any]:
    jar: SimpleCookie = SimpleCookie()
    for value in resp.headers.getall("Set-Cookie", []):
        jar.load(value)
    return {name: morsel for name, morsel in jar.items()}


async def session(client: Client) -> tuple[str, str]:
    """Log in; the cookie header to send and the CSRF token."""
    resp = await login(client)
    assert resp.status == 303, await resp.text()
    got = cookies_of(resp)
    token, csrf = got[SESSION_COOKIE].value, got[CSRF_COOKIE].value
    return f"{SESSION_COOKIE}={token}; {CSRF_COOKIE}={csrf}", csrf
