"""Authentication, scopes and the audit log of the API; ``/v1/tokens`` and ``/v1/audit``.

:func:`access_middleware` is the app's outermost middleware. For each request
it finds the caller (:class:`Principal`):

* a unix-socket peer: ``admin``, named ``uid:<uid>`` (``SO_PEERCRED``);
* ``Authorization: Bearer`` with the ``api.token_file`` token: ``admin``,
  named ``token_file``; with a scoped token (``patrctl token create``): its
  scope and deployments, named ``token:<name>``;
* a dashboard session cookie (no ``Authorization``): ``dashboard.scope``,
  named ``dashboard:<client>``;
* with bearer auth off (``build_app(token=None)``: unix-only daemons, tests):
  ``admin``, named ``local``.

then asks :func:`patrd.model.scopes.decide` whether the route allows it (403 naming
the scope needed otherwise), and appends one audit row for every call that
is not a read, and for every refused call (401/403) whatever its method. The
audit row holds the method, the path and the deployment named in it, never a
body or a query string.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import struct
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from patrd.api.context import read_json, rfc3339
from patrd.api.errors import error_body, error_response
from patrd.api.principal import PRINCIPAL, Principal
from patrd.model.errors import BadRequest, PatrdError, SpecError
from patrd.model.scopes import (
    SAFE_METHODS,
    Scope,
    decide,
    deployment_in,
    new_token,
    parse_duration,
    token_digest,
    valid_token_name,
)
from patrd.model.spec import NAME_RE
from patrd.state.audit_buffer import RefusalBuffer
from patrd.state.tokens import AccessStore, AuditRecord, AuditRow, TokenRecord

log = structlog.get_logger("patrd.api.access")

ACCESS = web.AppKey("patrd.model.scopes", AccessStore)
REFUSALS = web.AppKey("patrd.audit_refusals", RefusalBuffer)
AUDIT_DEFAULT_LIMIT = 100
AUDIT_MAX_LIMIT = 1000
_SINCE_RE = re.compile(r"[0-9]+[smhdw]")
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="patrd"'}
_REFUSED_WHO = web.ResponseKey("patrd.refused_who", str)


class SessionView(Protocol):
    """A logged-in console session, as the audit log names it."""

    @property
    def client(self) -> str: ...


class SessionGate(Protocol):
    """What the API asks of the web console (``patrd.dashboard.web.Dashboard``): the
    ``/ui`` routes it serves itself, and the session a ``/v1`` request carries."""

    @property
    def scope(self) -> Scope: ...

    def install(self, app: web.Application) -> None: ...

    def owns(self, path: str) -> bool: ...

    def has_cookie(self, request: web.Request) -> bool: ...

    def api_session(self, request: web.Request) -> SessionView | web.Response: ...


def add_routes(app: web.Application) -> None:
    """The routes, and the refusal buffer of the audit log (``app[ACCESS]`` is set)."""
    refusals = RefusalBuffer(app[ACCESS])
    app[REFUSALS] = refusals

    async def flush_refusals(_: web.Application) -> None:
        await refusals.close()

    app.on_cleanup.append(flush_refusals)
    r = app.router
    r.add_get("/v1/tokens", list_tokens, name="list_tokens", allow_head=False)
    r.add_post("/v1/tokens", create_token, name="create_token")
    r.add_delete("/v1/tokens/{name}", revoke_token, name="revoke_token")
    r.add_get("/v1/audit", list_audit, name="list_audit", allow_head=False)


# --- the middleware --------------------------------------------------------------


def access_middleware(
    *,
    token: str | None,
    trust_unix_peers: bool,
    public_routes: frozenset[tuple[str, str]],
    dashboard: SessionGate | None = None,
    clock: Callable[[], float] = time.time,
) -> Middleware:
    expected = token.encode() if token is not None else None

    async def identify(request: web.Request, access: AccessStore) -> Principal | web.Response:
        if trust_unix_peers and _is_unix_peer(request):
            return Principal(_peer_uid(request), Scope.ADMIN)
        if expected is None:
            return Principal("local", Scope.ADMIN)
        if (
            dashboard is not None
            and "Authorization" not in request.headers
            and dashboard.has_cookie(request)
        ):
            found = dashboard.api_session(request)
            if isinstance(found, web.Response):
                return found
            return Principal(f"dashboard:{found.client}", dashboard.scope)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return error_response(
                401,
                "unauthorized",
                "missing bearer token (Authorization: Bearer <token>)",
                headers=_UNAUTHORIZED,
            )
        raw = presented.encode("utf-8", "surrogateescape")
        if hmac.compare_digest(raw, expected):
            return Principal("token_file", Scope.ADMIN)
        # Looked up by digest: the digest is all the table holds, and equal
        # digests mean equal tokens (SHA-256 preimage resistance).
        record = await access.token_by_digest(token_digest(presented))
        now = clock()
        if record is None or record.expired(now):
            why = "expired bearer token" if record is not None else "invalid bearer token"
            response = error_response(
                401,
                "unauthorized",
                why,
                headers={"WWW-Authenticate": 'Bearer realm="patrd", error="invalid_token"'},
            )
            if record is not None:  # the audit log names whose token expired
                response[_REFUSED_WHO] = f"token:{record.name}"
            return response
        await access.touch_token(record, now)
        return Principal(f"token:{record.name}", record.scope, record.deployments)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in public_routes:
            return await handler(request)
        if dashboard is not None and dashboard.owns(request.path):
            return await handler(request)  # /ui/: its handlers check the session
        access = request.app[ACCESS]
        pattern = _pattern(request)
        deployment = deployment_in(pattern, dict(request.match_info))
        try:
            found = await identify(request, access)
        except PatrdError as exc:  # the store is down: nobody can be checked
            log.warning("api.auth_unavailable", error=str(exc))
            return error_response(503, "store_unavailable", "cannot check the caller's token")
        refusals = request.app[REFUSALS]
        if isinstance(found, web.Response):
            who = found.get(_REFUSED_WHO) or _anonymous(request)
            why = found.text or ""
            refusals.add(_row(who, request, deployment, found.status, _message_of(why)))
            return found
        principal = found
        decision = decide(
            request.method, pattern, principal.scope, principal.deployments, deployment
        )
        if not decision.allowed:
            message = (
                f"{decision.reason}; {principal.who} has '{principal.scope.label}'"
                if principal.scope < decision.needed
                else decision.reason
            )
            body = error_body("forbidden", message)
            body["needed_scope"] = decision.needed.label
            refusals.add(_row(principal.who, request, deployment, 403, decision.reason))
            return web.json_response(body, status=403)
        request[PRINCIPAL] = principal
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if deployment is None and pattern == "/v1/deployments" and status == 201:
                deployment = _created_deployment(response.headers.get("Location", ""))
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if status == 503:
                # The store did not answer in time (locked, disk full): an inline
                # audit write would wait as long again before the client hears.
                # The batched writer tries in the background (a failure is logged).
                refusals.add(_row(principal.who, request, deployment, status, ""))
            elif request.method not in SAFE_METHODS or status in (401, 403):
                await _audit(access, principal.who, request, deployment, status, "")

    return middleware


def _message_of(body: str) -> str:
    """The ``message`` of an error body, for the audit row's detail."""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        return ""
    return message if isinstance(message, str) else ""


def _row(
    who: str, request: web.Request, deployment: str | None, status: int, detail: str
) -> AuditRow:
    return AuditRow(time.time(), who, request.method, request.path, deployment, status, detail)


async def _audit(
    access: AccessStore,
    who: str,
    request: web.Request,
    deployment: str | None,
    status: int,
    detail: str,
) -> None:
    try:
        await access.append_audit(who, request.method, request.path, deployment, status, detail)
    except PatrdError as exc:
        log.error(
            "api.audit_failed", who=who, method=request.method, path=request.path, error=str(exc)
        )


def _created_deployment(location: str) -> str | None:
    """The name a create answered with (``Location: /v1/deployments/NAME``)."""
    prefix = "/v1/deployments/"
    name = location[len(prefix) :] if location.startswith(prefix) else ""
    return name if NAME_RE.fullmatch(name) else None


def _pattern(request: web.Request) -> str | None:
    """The route pattern aiohttp matched (``/v1/deployments/{name}``), None for no route."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    resource = match.route.resource
    return None if resource is None else resource.canonical


def _anonymous(request: web.Request) -> str:
    return f"anonymous:{request.remote or '?'}"


def _is_unix_peer(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and getattr(sock, "family", None) == socket.AF_UNIX


def _peer_uid(request: web.Request) -> str:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return "uid:?"
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return "uid:?"
    _pid, uid, _gid = struct.unpack("3i", creds)
    return f"uid:{uid}"


# --- /v1/tokens ---------------------------------------------------------------------


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise SpecError("body", "must be a JSON object")
    unknown = set(body) - {"name", "scope", "expires_in", "deployments"}
    if unknown:
        raise SpecError(
            sorted(unknown)[0], "unknown field; allowed: name, scope, expires_in, deployments"
        )
    name = body.get("name")
    if not isinstance(name, str) or not valid_token_name(name):
        raise SpecError("name", "1-63 characters: a-z, 0-9, '.', '_', '-', starting with a-z/0-9")
    scope_text = body.get("scope")
    if not isinstance(scope_text, str):
        raise SpecError("scope", "is required: read, deploy, write or admin")
    try:
        scope = Scope.parse(scope_text)
    except ValueError as exc:
        raise SpecError("scope", str(exc)) from None
    expires_in = body.get("expires_in")
    expires_at: float | None = None
    if expires_in is not None:
        if not isinstance(expires_in, str):
            raise SpecError("expires_in", "a duration like 30d, 12h, 90m or 2w")
        try:
            expires_at = time.time() + parse_duration(expires_in)
        except ValueError as exc:
            raise SpecError("expires_in", str(exc)) from None
    deployments = _deployments(body.get("deployments"), scope)
    token = new_token()
    record = await request.app[ACCESS].create_token(
        name, token_digest(token), scope, deployments, expires_at
    )
    log.info("api.token_created", name=name, scope=scope.label)
    answer = token_json(record)
    answer["token"] = token  # the only time it is shown
    return web.json_response(answer, status=201, headers={"Cache-Control": "no-store"})


def _deployments(value: Any, scope: Scope) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise SpecError("deployments", "a non-empty list of deployment names, or absent for all")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not NAME_RE.fullmatch(item):
            raise SpecError(f"deployments.{i}", "not a deployment name")
    if scope is Scope.ADMIN:
        raise SpecError("deployments", "an admin token cannot be limited to deployments")
    return frozenset(value)


async def list_tokens(request: web.Request) -> web.Response:
    records = await request.app[ACCESS].list_tokens()
    return web.json_response({"tokens": [token_json(r) for r in records]})


async def revoke_token(request: web.Request) -> web.Response:
    record = await request.app[ACCESS].revoke_token(request.match_info["name"])
    log.info("api.token_revoked", name=record.name)
    return web.json_response({"revoked": record.name})


def token_json(record: TokenRecord) -> dict[str, Any]:
    now = time.time()
    return {
        "name": record.name,
        "scope": record.scope.label,
        "deployments": None if record.deployments is None else sorted(record.deployments),
        "created_at": rfc3339(record.created_at),
        "expires_at": None if record.expires_at is None else rfc3339(record.expires_at),
        "expired": record.expired(now),
        "last_used_at": None if record.last_used_at is None else rfc3339(record.last_used_at),
    }


# --- /v1/audit ----------------------------------------------------------------------


async def list_audit(request: web.Request) -> web.Response:
    query = request.query
    for key in query:
        if key not in ("since", "who", "deployment", "limit"):
            raise BadRequest(f"unknown query parameter {key!r}", field=key)
    limit = AUDIT_DEFAULT_LIMIT
    if "limit" in query:
        text = query["limit"]
        if not text.isdigit() or not 1 <= int(text) <= AUDIT_MAX_LIMIT:
            raise BadRequest(f"limit must be 1..{AUDIT_MAX_LIMIT}", field="limit")
        limit = int(text)
    since = _since(query["since"]) if "since" in query else None
    await request.app[REFUSALS].flush()  # refusals queued a moment ago are included
    records = await request.app[ACCESS].list_audit(
        since=since, who=query.get("who"), deployment=query.get("deployment"), limit=limit
    )
    return web.json_response({"entries": [audit_json(r) for r in records]})


def _since(text: str) -> float:
    """An RFC 3339 time, or a duration back from now (``1h``)."""
    if _SINCE_RE.fullmatch(text):
        try:
            return time.time() - parse_duration(text)
        except ValueError as exc:
            raise BadRequest(str(exc), field="since") from None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            "since must be an RFC 3339 time (2026-01-02T03:04:05Z) or a duration (1h)",
            field="since",
        ) from None
    if moment.tzinfo is None:
        raise BadRequest("since needs a time zone (Z or +hh:mm)", field="since")
    return moment.timestamp()


def audit_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": rfc3339(record.at),
        "who": record.who,
        "method": record.method,
        "path": record.path,
        "deployment": record.deployment,
        "status": record.status,
        "detail": record.detail,
    }
