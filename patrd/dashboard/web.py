"""The dashboard's HTTP side: ``/ui/`` pages, login/logout, and session auth for ``/v1``.

The dashboard is static files (``static/``: HTML, vanilla JS modules, CSS)
whose JavaScript calls the public ``/v1`` API like any other client. What
this module adds to the API's TCP app:

* ``GET /ui/`` the app (302 to ``/ui/login`` without a session);
  ``GET /ui/login`` the login form; ``POST /ui/login`` (form field
  ``password``) → 303 to ``/ui/`` with two cookies, or 401 (wrong password),
  429 (rate limited, ``Retry-After``), 403 (cross-origin form);
  ``POST /ui/logout`` (CSRF token required) → 303 to ``/ui/login``;
  ``GET /ui/static/{file}``.
* Cookies: ``__Host-patrd_session`` (``HttpOnly``) and ``__Host-patrd_csrf``
  (readable by the page's script), both ``Secure; SameSite=Strict; Path=/``.
* :meth:`Dashboard.api_session`: the access middleware asks it about a
  ``/v1`` request that carries the session cookie and no ``Authorization``:
  a live session authorizes reads; writes (anything but GET/HEAD/OPTIONS) also
  need ``X-CSRF-Token`` equal to the session's token (403 otherwise). An
  expired or unknown session is 401. A session acts with ``dashboard.scope``
  (default ``write``; patrd/model/scopes.py).
* Login attempts are reserved with the limiter before the handler's first
  await, so concurrent attempts cannot race past it.
* Every response of the app gets ``X-Frame-Options: DENY`` and
  ``X-Content-Type-Options: nosniff``; ``/ui/`` pages also a strict CSP (no
  inline script or style, nothing from other origins).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import ipaddress
import mimetypes
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web

from patrd.api.errors import error_response
from patrd.dashboard.sessions import LoginLimiter, Session, Sessions, password_matches
from patrd.model.errors import PatrdError
from patrd.model.scopes import Scope
from patrd.proxy.limits import client_key
from patrd.settings.config import DashboardConfig

log = structlog.get_logger("patrd.dashboard")

PREFIX: Final = "/ui"
SESSION_COOKIE: Final = "__Host-patrd_session"
CSRF_COOKIE: Final = "__Host-patrd_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
MIN_PASSWORD_CHARS: Final = 12
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC_DIR: Final = Path(__file__).parent / "static"

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PasswordFileError(PatrdError):
    """The admin password file is missing, unreadable or too short."""


def read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PasswordFileError(
            f"cannot read dashboard.admin_password_file {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise PasswordFileError(f"dashboard.admin_password_file {path} is not UTF-8") from None
    password = text.strip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordFileError(
            f"dashboard.admin_password_file {path}: the password must be at least "
            f"{MIN_PASSWORD_CHARS} characters"
        )
    return password


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file of ``static/`` in memory (a few tens of kB), with a content ETag."""
    assets = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        kind = {
            ".js": "text/javascript",
            ".css": "text/css",
            ".html": "text/html",
            ".svg": "image/svg+xml",
        }.get(path.suffix) or (mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        if kind.startswith("text/") or kind.endswith("+xml"):
            kind += "; charset=utf-8"
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[path.name] = Asset(body, kind, etag)
    return assets


class Dashboard:
    """Sessions, the login limiter and the ``/ui/`` handlers of one daemon."""

    def __init__(
        self,
        config: DashboardConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        assets: dict[str, Asset] | None = None,
    ) -> None:
        if config.admin_password_file is None:
            raise PasswordFileError("dashboard.admin_password_file is not set")
        self.password_file = config.admin_password_file
        self._password = read_password(self.password_file)  # fail at start, not at login
        self.sessions = Sessions(ttl_s=config.session_ttl_s, idle_s=config.idle_timeout_s)
        self.limiter = LoginLimiter(per_client=config.login_attempts_per_minute)
        self.scope = Scope.parse(config.scope)  # what a session may do on /v1
        self.cookie_max_age = int(config.session_ttl_s)
        self._clock = clock
        self._assets = assets if assets is not None else load_assets()

    # --- wiring ---------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._to_app, allow_head=False)  # a browser pointed at the listener
        r.add_get(PREFIX, self._to_app, allow_head=False)
        r.add_get(PREFIX + "/", self.index, allow_head=False)
        r.add_get(PREFIX + "/login", self.login_page, allow_head=False)
        r.add_post(PREFIX + "/login", self.login)
        r.add_post(PREFIX + "/logout", self.logout)
        r.add_get(PREFIX + "/static/{file}", self.static, allow_head=False)
        app.on_response_prepare.append(_security_headers)

    @staticmethod
    def owns(path: str) -> bool:
        """``/ui`` paths (and ``/``, a redirect to it) authenticate themselves (the login page
        needs no session)."""
        return path in ("/", PREFIX) or path.startswith(PREFIX + "/")

    @staticmethod
    def has_cookie(request: web.Request) -> bool:
        return SESSION_COOKIE in request.cookies

    def api_session(self, request: web.Request) -> Session | web.Response:
        """The session that authorizes this API request (it acts with :attr:`scope`),
        else the refusal."""
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE), self._clock())
        if session is None:
            return error_response(
                401, "unauthorized", "the session has expired or was logged out; log in at /ui/"
            )
        if request.method not in SAFE_METHODS and not session.csrf_matches(
            request.headers.get(CSRF_HEADER)
        ):
            return error_response(
                403,
                "forbidden",
                f"missing or wrong CSRF token: send {CSRF_HEADER} with the value of the "
                f"{CSRF_COOKIE} cookie",
            )
        return session

    # --- handlers ---------------------------------------------------------------

    async def _to_app(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(PREFIX + "/")

    async def index(self, request: web.Request) -> web.Response:
        if self._session(request) is None:
            raise web.HTTPFound(PREFIX + "/login")
        return self._asset_response(request, "index.html")

    async def login_page(self, request: web.Request) -> web.Response:
        if self._session(request) is not None:
            raise web.HTTPFound(PREFIX + "/")
        message = "You have been logged out." if "logged_out" in request.query else ""
        return self._login_response(message, 200, notice=True)

    async def login(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return self._login_response("Cross-origin login refused.", 403)
        client = client_of(request)
        now = self._clock()
        # Reserved before the first await: concurrent attempts each take one.
        wait = self.limiter.reserve(client, now)
        if wait is not None:
            log.warning("dashboard.login_limited", client=client, retry_after_s=wait)
            return self._login_response(
                f"Too many failed logins. Try again in {wait} s.",
                429,
                headers={"Retry-After": str(wait)},
            )
        form = await request.post()
        given = form.get("password")
        if not isinstance(given, str) or not await self._check_password(given):
            log.warning("dashboard.login_failed", client=client)
            return self._login_response("Wrong password.", 401)
        self.limiter.succeeded(client)
        session = self.sessions.create(client, now)
        log.info("dashboard.login", client=client, sessions=len(self.sessions))
        response = web.HTTPSeeOther(PREFIX + "/")
        self._set_cookies(response, session)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return error_response(403, "forbidden", "cross-origin request refused")
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token, self._clock())
        if session is not None:
            presented = request.headers.get(CSRF_HEADER)
            if presented is None and request.content_type == "application/x-www-form-urlencoded":
                field = (await request.post()).get("csrf")
                presented = field if isinstance(field, str) else None
            if not session.csrf_matches(presented):
                return error_response(403, "forbidden", f"missing or wrong {CSRF_HEADER}")
            self.sessions.revoke(token)
            log.info("dashboard.logout", client=session.client)
        response = web.HTTPSeeOther(PREFIX + "/login?logged_out")
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.del_cookie(name, path="/", secure=True, samesite="Strict")
        raise response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in self._assets or name.endswith(".html"):
            raise web.HTTPNotFound(text="no such file")
        return self._asset_response(request, name)

    # --- helpers ------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), self._clock())

    async def _check_password(self, given: str) -> bool:
        """Re-read the file at each login: a changed password logs everyone out."""
        try:
            current = await asyncio.to_thread(read_password, self.password_file)
        except PasswordFileError as exc:
            log.error("dashboard.password_file", error=str(exc))
            return False
        if current != self._password:
            revoked = self.sessions.revoke_all()
            log.info("dashboard.password_changed", sessions_revoked=revoked)
            self._password = current
        return password_matches(given, current)

    def _set_cookies(self, response: web.StreamResponse, session: Session) -> None:
        for name, value, httponly in (
            (SESSION_COOKIE, session.token, True),
            (CSRF_COOKIE, session.csrf, False),  # the page's script reads it
        ):
            response.set_cookie(
                name,
                value,
                path="/",
                secure=True,
                httponly=httponly,
                samesite="Strict",
                max_age=self.cookie_max_age,
            )

    def _asset_response(self, request: web.Request, name: str) -> web.Response:
        asset = self._assets[name]
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
        if name.endswith(".html"):
            headers = dict(PAGE_HEADERS)
        elif request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body, headers={**headers, "Content-Type": asset.content_type}
        )

    def _login_response(
        self,
        message: str,
        status: int,
        *,
        notice: bool = False,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        page = self._assets["login.html"].body.decode()
        if message:
            kind = "notice" if notice else "error"
            block = f'<p class="{kind}" role="alert" id="login-message">{html.escape(message)}</p>'
            page = page.replace("<!--message-->", block)
        return web.Response(
            text=page,
            status=status,
            content_type="text/html",
            headers={**PAGE_HEADERS, **(headers or {})},
        )


def client_of(request: web.Request) -> str:
    """The rate-limit key of the client: the peer, or behind patrd's own proxy
    (a loopback peer sending ``X-Forwarded-For``) the address the proxy appended."""
    peer = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and _is_loopback(peer):
        last = forwarded.rsplit(",", 1)[-1].strip()
        with contextlib.suppress(ValueError):
            peer = str(ipaddress.ip_address(last))
    return client_key(peer)


def same_origin(request: web.Request) -> bool:
    """A browser's POST carries ``Origin``; it must name this server.

    Behind patrd's proxy (loopback peer) the browser's host is in
    ``X-Forwarded-Host``. Requests without ``Origin`` (curl, scripts) pass:
    the login needs the password and the logout the CSRF token anyway.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    host = request.host
    forwarded_host = request.headers.get("X-Forwarded-Host")
    if forwarded_host and _is_loopback(request.remote or ""):
        host = forwarded_host
    return urllib.parse.urlsplit(origin).netloc.lower() == host.lower()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if Dashboard.owns(request.path):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "same-origin")
