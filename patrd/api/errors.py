"""Errors → HTTP, in one table.

Every error body has the same shape: ``{"error": <code>, "message": <text>}``
plus ``"field"`` when the error names the offending input (``ports.70000``,
``confirm``). The middleware below is the only place that turns exceptions
into responses; handlers just raise.

    SpecError      422 invalid            (field always)
    BadRequest     400 bad_request        (field when known)
    NotFound       404 not_found
    Conflict       409 conflict
    StoreError     503 store_unavailable
    EngineError    503 engine_unavailable
    anything else  500 internal           (traceback logged, never echoed)

aiohttp's own HTTP exceptions (unknown route, wrong method, body too large,
unauthorized) are rendered in the same JSON shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NotRequired, TypedDict

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from patrd.model.errors import (
    BadRequest,
    Conflict,
    EngineError,
    NotFound,
    PatrdError,
    SpecError,
    StoreError,
)
from patrd.model.scopes import Scope
from patrd.model.typed_schema import Doc
from patrd.state.crypto import SecretsKeyError

log = structlog.get_logger("patrd.api")

INTERNAL_MESSAGE = "internal error (see daemon log)"


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    status: int
    code: str


# Looked up along the exception's MRO, so a subclass (ImageNotFound) inherits
# its parent's row unless it has its own.
ERROR_TABLE: dict[type[PatrdError], ErrorMapping] = {
    SpecError: ErrorMapping(422, "invalid"),
    BadRequest: ErrorMapping(400, "bad_request"),
    NotFound: ErrorMapping(404, "not_found"),
    Conflict: ErrorMapping(409, "conflict"),
    StoreError: ErrorMapping(503, "store_unavailable"),
    EngineError: ErrorMapping(503, "engine_unavailable"),
    SecretsKeyError: ErrorMapping(503, "secrets_unavailable"),
}

# Codes for aiohttp's HTTPException family (routing, size limits, auth).
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}

_HTTP_MESSAGES: dict[int, str] = {
    404: "no such route",
}

# Headers of an aiohttp HTTPException worth keeping on the JSON rendering.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


# Codes answered outside the two tables: an unexpected error, the backup repository.
_OTHER_CODES = ("internal", "backup_unavailable")


def error_codes() -> list[str]:
    """Every ``error`` code the API answers: the error tables' rows, not a copy of them."""
    codes = {m.code for m in ERROR_TABLE.values()} | set(HTTP_CODES.values())
    return sorted(codes | set(_OTHER_CODES))


class ErrorJson(TypedDict):
    """Every error answer: a code for programs, a message for people, the offending input."""

    error: Annotated[str, Doc("machine-readable code", enum=error_codes())]
    message: Annotated[str, Doc("for humans")]
    field: NotRequired[
        Annotated[str, Doc("path of the offending input, e.g. ports.70000 or confirm")]
    ]
    needed_scope: NotRequired[
        Annotated[str, Doc("on 403: the scope this call needs", enum=[s.label for s in Scope])]
    ]


def error_body(code: str, message: str, field: str | None = None) -> ErrorJson:
    body: ErrorJson = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(error_body(code, message, field), status=status, headers=headers)


def mapping_for(exc: PatrdError) -> ErrorMapping | None:
    for cls in type(exc).__mro__:
        found = ERROR_TABLE.get(cls)
        if found is not None:
            return found
    return None


def render_patrd_error(exc: PatrdError) -> web.Response | None:
    """The JSON response for ``exc``, or None when the table has no row for it."""
    mapping = mapping_for(exc)
    if mapping is None:
        return None
    if isinstance(exc, SpecError | BadRequest):
        return error_response(mapping.status, mapping.code, exc.message, exc.field)
    return error_response(mapping.status, mapping.code, str(exc) or mapping.code)


def render_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    code = HTTP_CODES.get(status, exc.reason.lower().replace(" ", "_") or "http_error")
    message = _HTTP_MESSAGES.get(status) or exc.text or exc.reason
    if status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"method {exc.method} not allowed; allowed: {allowed}"
    if message.startswith(f"{status}: "):
        message = message.removeprefix(f"{status}: ")
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    return error_response(status, code, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PatrdError as exc:
        response = render_patrd_error(exc)
        if response is not None:
            if response.status >= 500:
                log.warning(
                    "api.unavailable",
                    method=request.method,
                    path=request.path,
                    error=type(exc).__name__,
                    message=str(exc),
                )
            return response
        log.exception("api.unmapped_error", method=request.method, path=request.path)
        return error_response(500, "internal", INTERNAL_MESSAGE)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like pass through untouched
        return render_http_exception(exc)
    except Exception:
        log.exception("api.internal_error", method=request.method, path=request.path)
        return error_response(500, "internal", INTERNAL_MESSAGE)
