"""A notification target, parsed and checked (pure): ``[[notify]]`` and the API share it.

Errors are ``SpecError(field, message)``; the config wraps them as
``notify[2].url`` and the API answers 422 naming the field. Secrets are never
held here, only the *names* of vault secrets (``secret``, ``password_secret``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from patrd.model.errors import SpecError
from patrd.model.spec import NAME_RE, SECRET_NAME_RE
from patrd.notify.rules import check_filter


class TargetType(StrEnum):
    WEBHOOK = "webhook"  # generic JSON, signed with HMAC-SHA256
    SLACK = "slack"  # Slack-compatible incoming webhook ({"text": ...})
    EMAIL = "email"  # SMTP


DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 60.0

_COMMON = {"name", "type", "events", "timeout_s"}
_FIELDS: Mapping[TargetType, set[str]] = {
    TargetType.WEBHOOK: _COMMON | {"url", "url_secret", "secret"},
    TargetType.SLACK: _COMMON | {"url", "url_secret"},
    TargetType.EMAIL: _COMMON
    | {
        "smtp_host",
        "smtp_port",
        "starttls",
        "username",
        "password_secret",
        "mail_from",
        "mail_to",
    },
}


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    type: TargetType
    events: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    url: str | None = None  # webhook, slack
    url_secret: str | None = None  # ... or a vault secret holding the URL (Slack's is a secret)
    secret: str | None = None  # webhook: vault secret holding the HMAC key
    smtp_host: str | None = None
    smtp_port: int = 25
    starttls: bool = False
    username: str | None = None
    password_secret: str | None = None  # email: vault secret holding the SMTP password
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    source: str = "config"  # "config" ([[notify]]) or "api" (stored, runtime)

    def to_json(self) -> dict[str, Any]:
        """What the API shows and the store keeps: secret *names*, never values."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type.value,
            "events": list(self.events),
            "timeout_s": self.timeout_s,
        }
        if self.type is TargetType.EMAIL:
            out.update(
                smtp_host=self.smtp_host,
                smtp_port=self.smtp_port,
                starttls=self.starttls,
                username=self.username,
                password_secret=self.password_secret,
                mail_from=self.mail_from,
                mail_to=list(self.mail_to),
            )
        else:
            out["url"] = self.url
            out["url_secret"] = self.url_secret
            if self.type is TargetType.WEBHOOK:
                out["secret"] = self.secret
        return out

    def public_json(self) -> dict[str, Any]:
        """What the API answers: ``to_json`` with the URL masked (``masked_url``)."""
        out = self.to_json()
        if self.url is not None:
            out["url"] = masked_url(self.url, keep_path=self.type is TargetType.WEBHOOK)
        return out


def masked_url(url: str, *, keep_path: bool) -> str:
    """``url`` without what may be a credential: user info, the query, and (Slack's
    token-bearing URLs) the path."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    path = parts.path if keep_path else ("/…" if parts.path not in ("", "/") else parts.path)
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{netloc}{path}{query}"


def parse_target(raw: Any, *, source: str = "config") -> Target:
    if not isinstance(raw, Mapping):
        raise SpecError("body", "must be an object")
    name = _str(raw, "name")
    if not NAME_RE.fullmatch(name) or len(name) > 63:
        raise SpecError("name", "must be 1-63 of [a-z0-9-], starting and ending alphanumeric")
    type_text = _str(raw, "type")
    try:
        kind = TargetType(type_text)
    except ValueError:
        raise SpecError("type", "must be one of webhook, slack, email") from None
    unknown = sorted(set(raw) - _FIELDS[kind])
    if unknown:
        raise SpecError(unknown[0], f"unknown field for type {kind.value}")
    events = _events(raw.get("events", ["*"]))
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise SpecError("timeout_s", "must be a number")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise SpecError("timeout_s", f"must be > 0 and at most {MAX_TIMEOUT_S:g}")
    common: dict[str, Any] = {
        "name": name,
        "type": kind,
        "events": events,
        "timeout_s": float(timeout),
        "source": source,
    }
    if kind is TargetType.EMAIL:
        return Target(**common, **_email(raw))
    url_secret = _secret_ref(raw, "url_secret")
    if url_secret is not None and raw.get("url") is not None:
        raise SpecError("url_secret", "give url or url_secret, not both")
    url = _url(raw) if url_secret is None else None
    secret = _secret_ref(raw, "secret") if kind is TargetType.WEBHOOK else None
    return Target(**common, url=url, url_secret=url_secret, secret=secret)


def _email(raw: Mapping[str, Any]) -> dict[str, Any]:
    host = _str(raw, "smtp_host")
    if not host or any(c in host for c in " /@"):
        raise SpecError("smtp_host", "must be a host name or address")
    port = raw.get("smtp_port", 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise SpecError("smtp_port", "must be a port number 1..65535")
    starttls = raw.get("starttls", False)
    if not isinstance(starttls, bool):
        raise SpecError("starttls", "must be true or false")
    username = raw.get("username")
    if username is not None and not isinstance(username, str):
        raise SpecError("username", "must be a string")
    password = _secret_ref(raw, "password_secret")
    if password is not None and not username:
        raise SpecError("username", "is required with password_secret")
    mail_from = _address(_str(raw, "mail_from"), "mail_from")
    to = raw.get("mail_to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        raise SpecError("mail_to", "must be a non-empty list of addresses")
    mail_to = tuple(_address(a, f"mail_to[{i}]") for i, a in enumerate(to))
    return {
        "smtp_host": host,
        "smtp_port": int(port),
        "starttls": starttls,
        "username": username or None,
        "password_secret": password,
        "mail_from": mail_from,
        "mail_to": mail_to,
    }


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or value.count("@") != 1 or any(c in value for c in " \r\n<>,"):
        raise SpecError(field, "must be an e-mail address (user@host)")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError("events", 'must be a non-empty list of kinds ("rollout.failed", "*")')
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"events[{i}]", "must be a string")
        why = check_filter(item)
        if why is not None:
            raise SpecError(f"events[{i}]", why)
        out.append(item)
    return tuple(dict.fromkeys(out))


def _url(raw: Mapping[str, Any]) -> str:
    url = _str(raw, "url")
    if not url_ok(url):
        raise SpecError("url", "must be an http:// or https:// URL")
    return url


def url_ok(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _secret_ref(raw: Mapping[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not SECRET_NAME_RE.fullmatch(value):
        raise SpecError(field, "must name a secret (patrctl secret create NAME)")
    return value


def _str(raw: Mapping[str, Any], field: str) -> str:
    if field not in raw:
        raise SpecError(field, "is required")
    value = raw[field]
    if not isinstance(value, str):
        raise SpecError(field, "must be a string")
    return value
