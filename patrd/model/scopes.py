"""Who may call which API route: scopes, the route table and the decision. Pure.

A caller has one :class:`Scope` (``read`` < ``deploy`` < ``write`` <
``admin``) and, for scoped tokens, maybe a list of deployments it is limited
to. :func:`decide` answers, for a request already routed by aiohttp (its
*route pattern*, e.g. ``/v1/deployments/{name}/start``), whether the caller
may make it and which scope it needs.

The table :data:`RULES` fails closed: a route (or a method of a route) it
does not name needs ``admin``. To open a new route to lower scopes, add one
line to it (README "Scopes" lists the same table for users).

Tokens: ``patr_`` + 43 URL-safe characters (256 random bits). Only the
SHA-256 of a token is stored; a presented token is hashed and looked up by
its digest (the lookup's timing can tell an attacker at most something about
a SHA-256 of 256 random bits, which does not help forge a token). The
``api.token_file`` token is compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "RULES",
    "Decision",
    "Rule",
    "Scope",
    "decide",
    "new_token",
    "parse_duration",
    "required_scope",
    "token_digest",
]

TOKEN_PREFIX: Final = "patr_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES: Final = 32
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
DEPLOYMENT_ROUTE: Final = "/v1/deployments/{name}"


class Scope(IntEnum):
    """Ordered: each scope holds every right of the ones below it."""

    READ = 1
    DEPLOY = 2
    WRITE = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(
                f"unknown scope {text!r}; one of: read, deploy, write, admin"
            ) from None


@dataclass(frozen=True, slots=True)
class Rule:
    """``method`` is an HTTP method or ``*``; ``pattern`` an aiohttp route pattern,
    or a prefix ending in ``/**`` that matches the prefix and everything under it."""

    method: str
    pattern: str
    scope: Scope

    def matches(self, method: str, pattern: str) -> bool:
        if self.method not in ("*", method):
            return False
        if self.pattern.endswith("/**"):
            prefix = self.pattern[:-3]
            return pattern == prefix or pattern.startswith(prefix + "/")
        return pattern == self.pattern

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Exact beats prefix, a longer prefix beats a shorter one, a method beats ``*``."""
        exact = not self.pattern.endswith("/**")
        return (int(exact), len(self.pattern), int(self.method != "*"))


R, D, W, A = Scope.READ, Scope.DEPLOY, Scope.WRITE, Scope.ADMIN
_DEP = DEPLOYMENT_ROUTE

# Fail closed: anything not matched here needs admin. Keep in step with the
# "Scopes" table of README.md.
RULES: Final[tuple[Rule, ...]] = (
    # Reading: any scope.
    Rule("GET", "/v1/openapi.json", R),
    Rule("GET", "/metrics", R),
    Rule("GET", "/v1/firewall", R),
    Rule("GET", "/v1/deployments", R),
    Rule("GET", _DEP, R),
    Rule("GET", _DEP + "/instances", R),
    Rule("GET", _DEP + "/events", R),
    Rule("GET", _DEP + "/history", R),
    Rule("GET", _DEP + "/logs", R),
    Rule("GET", _DEP + "/metrics", R),
    Rule("GET", _DEP + "/volumes", R),
    Rule("GET", _DEP + "/config/{file}", R),
    Rule("GET", _DEP + "/jobs", R),  # job runs and their output: read, like instance logs
    Rule("GET", _DEP + "/jobs/{job}/runs", R),
    Rule("GET", _DEP + "/jobs/{job}/runs/{id}", R),
    Rule("GET", "/v1/secrets", R),  # names only below write (patrd/api/secrets.py)
    Rule("GET", "/v1/secrets/{name}", R),
    Rule("GET", "/v1/urls", R),
    Rule("GET", "/v1/urls/{id}", R),
    Rule("GET", "/v1/certificates", R),
    Rule("GET", "/v1/notifications/**", R),
    Rule("GET", "/v1/node/**", R),
    Rule("GET", "/v1/backups/**", R),
    # Rolling what exists: deploy.
    Rule("POST", _DEP + "/start", D),
    Rule("POST", _DEP + "/stop", D),
    Rule("POST", _DEP + "/redeploy", D),
    Rule("POST", _DEP + "/history/{digest}/revert", D),
    Rule("POST", _DEP + "/revert", D),
    # Everything about deployments, URLs and secrets: write.
    Rule("POST", "/v1/deployments", W),
    Rule("PATCH", _DEP, W),
    Rule("DELETE", _DEP, W),
    Rule("PUT", _DEP + "/config/{file}", W),
    Rule("DELETE", _DEP + "/config/{file}", W),
    Rule("*", _DEP + "/exec/**", W),
    Rule("*", _DEP + "/run/**", W),
    Rule("*", _DEP + "/jobs/**", W),
    Rule("POST", "/v1/secrets", W),
    Rule("PUT", "/v1/secrets/{name}", W),
    Rule("DELETE", "/v1/secrets/{name}", W),
    Rule("POST", "/v1/urls", W),
    Rule("PATCH", "/v1/urls/{id}", W),
    Rule("DELETE", "/v1/urls/{id}", W),
    # Sending a test message to a configured target changes nothing: write
    # (the dashboard's Node page has the button); adding a target is admin.
    Rule("POST", "/v1/notifications/{notification}/test", W),
    # Tokens, the audit log, backups, node settings, notifications: admin,
    # which is also the answer for everything not listed above.
    Rule("*", "/v1/tokens/**", A),
    Rule("*", "/v1/nodes/**", A),  # the swarm's nodes: list, drain, activate
    Rule("GET", "/v1/audit", A),
    Rule("POST", "/v1/backup", A),
    Rule("GET", "/v1/backups/{id}/state", A),
    Rule(
        "GET", "/v1/registry/login", A
    ),  # where the node registry's password lives  # the state archive: admin, like POST /v1/backup
)


def required_scope(method: str, pattern: str | None, rules: tuple[Rule, ...] = RULES) -> Scope:
    """The scope a request needs; ``pattern=None`` (no route matched) needs admin."""
    if pattern is None:
        return Scope.ADMIN
    found = [rule for rule in rules if rule.matches(method, pattern)]
    if not found:
        return Scope.ADMIN
    return max(found, key=lambda rule: rule.specificity).scope


def deployment_in(pattern: str | None, match: dict[str, str]) -> str | None:
    """The deployment a route names (``/v1/deployments/{name}…``), else None."""
    if pattern is None:
        return None
    if pattern == DEPLOYMENT_ROUTE or pattern.startswith(DEPLOYMENT_ROUTE + "/"):
        return match.get("name")
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    needed: Scope
    reason: str = ""  # why not, for the 403 body


def decide(
    method: str,
    pattern: str | None,
    scope: Scope,
    deployments: frozenset[str] | None = None,
    deployment: str | None = None,
    rules: tuple[Rule, ...] = RULES,
) -> Decision:
    """May a caller with ``scope`` (limited to ``deployments`` unless None) make
    ``method pattern`` about ``deployment`` (None: the route names none)?

    A limited caller may act only on its deployments; on routes that name no
    deployment it may only read (creating deployments, URLs or secrets would
    reach beyond its list).
    """
    needed = required_scope(method, pattern, rules)
    if scope < needed:
        return Decision(False, needed, f"this call needs the '{needed.label}' scope")
    if deployments is not None and scope < Scope.ADMIN:
        if deployment is not None and deployment not in deployments:
            return Decision(
                False,
                needed,
                f"this token is limited to deployments: {', '.join(sorted(deployments))}",
            )
        if deployment is None and method not in SAFE_METHODS:
            return Decision(
                False,
                needed,
                "this token is limited to some deployments; this call needs an unlimited token",
            )
    return Decision(True, needed)


# --- tokens -------------------------------------------------------------------


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
# The same, as the OpenAPI document states it (parse_duration strips the text first).
DURATION_PATTERN: Final = rf"^\s*{_DURATION_RE.pattern}\s*$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_S: Final = 10 * 365 * 86400


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` → seconds (at most ten years)."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m, 2w")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than ten years")
    return seconds


_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def valid_token_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None
