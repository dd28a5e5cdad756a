"""Managed URLs: parse and validate user input into frozen specs. Pure, no I/O.

A managed URL is ``(domain, path prefix) → target``; the target is one of
the hosted product's three kinds:

* ``{"deployment": NAME, "port": PORT}``: proxied to a deployment's port;
* ``{"redirect": URL, "permanent": BOOL}``: 308 (permanent, the default) or
  307 to ``URL`` + the rest of the path, keeping the query string;
* ``{"proxy": URL}``: proxied to an outside ``http(s)://host[:port][/base]``,
  with ``Host`` set to that host and ``/base`` put in front of the path.

``(domain, path)`` is unique; the path is a prefix on a segment boundary and
the longest one wins (``patrd.proxy.router``). ``http_redirect`` answers
plain-HTTP requests with a 308 to the same URL on HTTPS (ACME challenge
paths excepted). Errors name the field, as in ``patrd.model.spec``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from patrd.model.checks import bool_at, object_at, reject_unknown
from patrd.model.errors import SpecError
from patrd.model.spec import NAME_RE
from patrd.model.url_shapes import (
    MIN_BODY_LIMIT,
    TIMEOUT_FIELDS,
    URL_FIELDS,
    TimeoutsJson,
    UrlSpecJson,
)

MAX_TIMEOUT_S = 7 * 86400
MAX_BODY_LIMIT = 64 * 1024**3
MAX_DOMAIN = 253
MAX_PATH = 1024
MAX_TARGET_URL = 2048

_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    deployment: str
    port: int

    def to_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "port": self.port}


@dataclass(frozen=True, slots=True)
class RedirectTarget:
    url: str
    permanent: bool = True

    @property
    def status(self) -> int:
        return 308 if self.permanent else 307

    def to_json(self) -> dict[str, Any]:
        return {"redirect": self.url, "permanent": self.permanent}


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    url: str

    def to_json(self) -> dict[str, Any]:
        return {"proxy": self.url}

    @property
    def parts(self) -> tuple[bool, str, int, str]:
        """``(tls, host, port, base path without trailing slash)``."""
        split = urllib.parse.urlsplit(self.url)
        tls = split.scheme == "https"
        assert split.hostname is not None  # validated
        return tls, split.hostname, split.port or (443 if tls else 80), split.path.rstrip("/")


Target = DeploymentTarget | RedirectTarget | ProxyTarget


@dataclass(frozen=True, slots=True)
class UrlSpec:
    domain: str  # lowercase, no trailing dot
    path: str  # "/" or "/a/b" (no trailing slash)
    target: Target
    http_redirect: bool = True
    max_body_bytes: int | None = None  # None: proxy.max_body_bytes
    # TIMEOUT_FIELDS in order, 0.0: the proxy's; None: all the proxy's.
    timeouts: tuple[float, float, float, float] | None = None

    @property
    def deployment(self) -> str | None:
        """The deployment this URL points at, if any."""
        return self.target.deployment if isinstance(self.target, DeploymentTarget) else None

    def to_json(self) -> UrlSpecJson:
        return {
            "domain": self.domain,
            "path": self.path,
            "target": self.target.to_json(),
            "http_redirect": self.http_redirect,
            "max_body_bytes": self.max_body_bytes,
            "timeouts": _timeouts_json(self.timeouts),
        }

    def label(self) -> str:
        return self.domain + self.path


@dataclass(frozen=True, slots=True)
class UrlRecord:
    id: str
    spec: UrlSpec
    created_at: float
    updated_at: float


def parse_create(body: Any, *, default_http_redirect: bool = True) -> UrlSpec:
    obj = object_at(body, "body")
    reject_unknown(obj, URL_FIELDS, "")
    if "domain" not in obj:
        raise SpecError("domain", "is required")
    if "target" not in obj:
        raise SpecError("target", "is required")
    return UrlSpec(
        domain=parse_domain(obj["domain"], "domain"),
        path=parse_path(obj.get("path", "/"), "path"),
        target=parse_target(obj["target"]),
        http_redirect=bool_at(obj.get("http_redirect", default_http_redirect), "http_redirect"),
        max_body_bytes=_body_limit(obj.get("max_body_bytes")),
        timeouts=parse_timeouts(obj.get("timeouts")),
    )


def parse_update(current: UrlSpec, body: Any) -> UrlSpec:
    """Given fields replace the current ones (the target is replaced whole)."""
    obj = object_at(body, "body")
    reject_unknown(obj, URL_FIELDS, "")
    return UrlSpec(
        domain=parse_domain(obj["domain"], "domain") if "domain" in obj else current.domain,
        path=parse_path(obj["path"], "path") if "path" in obj else current.path,
        target=parse_target(obj["target"]) if "target" in obj else current.target,
        http_redirect=(
            bool_at(obj["http_redirect"], "http_redirect")
            if "http_redirect" in obj
            else current.http_redirect
        ),
        max_body_bytes=(
            _body_limit(obj["max_body_bytes"])
            if "max_body_bytes" in obj
            else current.max_body_bytes
        ),
        timeouts=parse_timeouts(obj["timeouts"]) if "timeouts" in obj else current.timeouts,
    )


def spec_from_json(data: Mapping[str, Any]) -> UrlSpec:
    """Stored JSON back into a spec (it was validated when written)."""
    return UrlSpec(
        domain=data["domain"],
        path=data["path"],
        target=parse_target(data["target"]),
        http_redirect=bool(data.get("http_redirect", True)),
        max_body_bytes=data.get("max_body_bytes"),
        timeouts=parse_timeouts(data.get("timeouts")),
    )


def parse_timeouts(value: Any) -> tuple[float, float, float, float] | None:
    """``{"upstream_header_timeout_s": 600, ...}``: this URL's own timeouts (null: the proxy's)."""
    if value is None:
        return None
    obj = object_at(value, "timeouts")
    reject_unknown(obj, frozenset(TIMEOUT_FIELDS), "timeouts.")
    values: list[float] = []
    for name in TIMEOUT_FIELDS:
        v = obj.get(name)
        if v is None:
            values.append(0.0)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= MAX_TIMEOUT_S:
            raise SpecError(
                f"timeouts.{name}", f"must be a number of seconds above 0, at most {MAX_TIMEOUT_S}"
            )
        values.append(float(v))
    if not any(values):
        return None
    return values[0], values[1], values[2], values[3]


def _timeouts_json(timeouts: tuple[float, ...] | None) -> TimeoutsJson | None:
    if timeouts is None:
        return None
    # The keys are TIMEOUT_FIELDS, which are TimeoutsJson's keys.
    return cast(
        TimeoutsJson, {name: v for name, v in zip(TIMEOUT_FIELDS, timeouts, strict=True) if v}
    )


def _body_limit(value: Any) -> int | None:
    """A request body limit for this URL (e.g. a registry taking large layers)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError("max_body_bytes", "must be an integer number of bytes (or null)")
    if not MIN_BODY_LIMIT <= value <= MAX_BODY_LIMIT:
        raise SpecError(
            "max_body_bytes", f"must be from {MIN_BODY_LIMIT} to {MAX_BODY_LIMIT} bytes"
        )
    return int(value)


def parse_domain(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise SpecError(field, "must be a string")
    domain = value.strip().lower().rstrip(".")
    if not domain:
        raise SpecError(field, "must not be empty")
    if len(domain) > MAX_DOMAIN:
        raise SpecError(field, f"must be at most {MAX_DOMAIN} characters")
    if domain.startswith("*."):
        raise SpecError(
            field, "wildcards are not supported (HTTP-01 cannot validate them); name each host"
        )
    labels = domain.split(".")
    if len(labels) < 2:
        raise SpecError(field, f"{value!r} is not a fully qualified domain name")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise SpecError(
            field, f"{value!r} is not a DNS name (letters, digits, '-' and '.'; IDNs as xn--)"
        )
    if labels[-1].isdigit():
        raise SpecError(field, "must be a domain name, not an IP address")
    return domain


def parse_path(value: Any, field: str) -> str:
    """A path prefix: ``/`` or ``/seg/seg``; a trailing slash is dropped."""
    if not isinstance(value, str):
        raise SpecError(field, "must be a string")
    if not value.startswith("/"):
        raise SpecError(field, "must start with '/'")
    if len(value) > MAX_PATH:
        raise SpecError(field, f"must be at most {MAX_PATH} characters")
    if not _PATH_RE.fullmatch(value) or _PCT_RE.search(value):
        raise SpecError(field, "may hold only URL path characters (no query, fragment or space)")
    path = value.rstrip("/") or "/"
    segments = path.split("/")[1:]
    if path != "/" and any(s in ("", ".", "..") for s in segments):
        raise SpecError(field, "must not contain empty, '.' or '..' segments")
    return path


def parse_target(value: Any) -> Target:
    obj = object_at(value, "target")
    kinds = [k for k in ("deployment", "redirect", "proxy") if k in obj]
    if len(kinds) != 1:
        raise SpecError(
            "target",
            "must be exactly one of {deployment, port}, {redirect, permanent} or {proxy}",
        )
    kind = kinds[0]
    if kind == "deployment":
        reject_unknown(obj, frozenset({"deployment", "port"}), "target.")
        name = obj["deployment"]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise SpecError("target.deployment", "must be a deployment name")
        if "port" not in obj:
            raise SpecError("target.port", "is required with target.deployment")
        port = obj["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SpecError("target.port", "must be an integer from 1 to 65535")
        return DeploymentTarget(name, port)
    if kind == "redirect":
        reject_unknown(obj, frozenset({"redirect", "permanent"}), "target.")
        url = _http_url(obj["redirect"], "target.redirect", allow_query=True)
        return RedirectTarget(url, bool_at(obj.get("permanent", True), "target.permanent"))
    reject_unknown(obj, frozenset({"proxy"}), "target.")
    return ProxyTarget(_http_url(obj["proxy"], "target.proxy", allow_query=False))


def _http_url(value: Any, field: str, *, allow_query: bool) -> str:
    if not isinstance(value, str):
        raise SpecError(field, "must be a string")
    if len(value) > MAX_TARGET_URL:
        raise SpecError(field, f"must be at most {MAX_TARGET_URL} characters")
    if any(ord(c) <= 32 or ord(c) >= 127 for c in value):
        raise SpecError(field, "must not contain spaces or control or non-ASCII characters")
    try:
        split = urllib.parse.urlsplit(value)
        port = split.port
    except ValueError as exc:
        raise SpecError(field, f"is not a valid URL: {exc}") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise SpecError(field, "must be an absolute http:// or https:// URL")
    if split.username is not None or split.password is not None:
        raise SpecError(field, "must not contain user information")
    if split.fragment or value.endswith("#"):
        raise SpecError(field, "must not contain a fragment")
    if not allow_query and (split.query or "?" in value):
        raise SpecError(field, "must not contain a query string")
    if port == 0:
        raise SpecError(field, "port must be from 1 to 65535")
    return value
