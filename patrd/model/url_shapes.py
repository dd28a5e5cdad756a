"""A managed URL's JSON form, declared once: what a create or patch takes, what is stored and shown.

``UrlSpecJson`` is ``UrlSpec.to_json()``'s type (patrd/model/urls.py), the
fields of the ``Url`` view (patrd/model/view_shapes.py) and, generated from
it, the ``CreateUrl`` / ``UpdateUrl`` request schemas (patrd/api/openapi_urls.py).
The checks themselves stay parsers in patrd/model/urls.py; the limits they
share with the schema are here.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from patrd.model.spec_shapes import NAME_RE
from patrd.model.typed_schema import Doc, Stated

MIN_BODY_LIMIT = 1024

# What parse_domain accepts, as the OpenAPI document states it: labels in any
# case (they are lowered), at least two, the last not all digits, trailing dots
# and surrounding spaces stripped.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_PATTERN = rf"^\s*(?:{_LABEL}\.)+(?=[A-Za-z0-9-]*[A-Za-z-]){_LABEL}\.*\s*$"

TARGET_SCHEMA: dict[str, Any] = {
    "description": "exactly one of the three kinds",
    "oneOf": [
        {
            "type": "object",
            "title": "deployment",
            "additionalProperties": False,
            "required": ["deployment", "port"],
            "properties": {
                "deployment": {"type": "string", "pattern": NAME_RE.pattern},
                "port": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 65535,
                    "description": "one of the deployment's HTTP ports",
                },
            },
        },
        {
            "type": "object",
            "title": "redirect",
            "additionalProperties": False,
            "required": ["redirect"],
            "properties": {
                "redirect": {
                    "type": "string",
                    "format": "uri",
                    "description": "base URL; the rest of the path and the query are kept",
                },
                "permanent": {
                    "type": "boolean",
                    "default": True,
                    "description": "true: 308, false: 307",
                },
            },
        },
        {
            "type": "object",
            "title": "proxy",
            "additionalProperties": False,
            "required": ["proxy"],
            "properties": {
                "proxy": {
                    "type": "string",
                    "format": "uri",
                    "description": "http(s)://host[:port][/base]; Host is set to host",
                }
            },
        },
    ],
}

_Seconds = Annotated[float | None, Doc(minimum=0, exclusiveMinimum=True)]


class TimeoutsJson(TypedDict, total=False):
    # In the order of patrd.proxy.router.Route.timeouts; absent: the proxy.* key's.
    body_timeout_s: _Seconds
    upstream_header_timeout_s: _Seconds
    upstream_idle_timeout_s: _Seconds
    send_timeout_s: _Seconds


class UrlSpecJson(TypedDict):
    domain: Annotated[
        str,
        Doc(
            "a fully qualified DNS name (no wildcard), lowercase",
            minLength=1,
            maxLength=253,
            pattern=DOMAIN_PATTERN,
            example="app.example.com",
        ),
    ]
    path: Annotated[
        str, Doc("path prefix on a segment boundary; the longest prefix wins", default="/")
    ]
    target: Annotated[dict[str, Any], Stated(TARGET_SCHEMA)]
    http_redirect: Annotated[
        bool, Doc("plain-HTTP requests get a 308 to https (default: tls.redirect_http)")
    ]
    max_body_bytes: Annotated[
        int | None,
        Doc(
            "request body limit for this URL (null: proxy.max_body_bytes) → 413",
            minimum=MIN_BODY_LIMIT,
        ),
    ]
    timeouts: Annotated[
        TimeoutsJson | None,
        Doc(
            "this URL's own proxy timeouts in seconds (absent or null: the proxy.* key of the "
            "same name); e.g. a long-poll endpoint's upstream_header_timeout_s",
            additionalProperties=False,
        ),
    ]


URL_FIELDS = frozenset(UrlSpecJson.__annotations__)
TIMEOUT_FIELDS = tuple(TimeoutsJson.__annotations__)
