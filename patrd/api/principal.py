"""Who is calling: set on the request by the access middleware (patrd/api/access.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from patrd.model.scopes import Scope


@dataclass(frozen=True, slots=True)
class Principal:
    who: str  # for the audit log: "uid:1000", "token:ci", "dashboard:10.0.0.7", ...
    scope: Scope
    deployments: frozenset[str] | None = None  # None: not limited to some deployments


PRINCIPAL = web.RequestKey("patrd.principal", Principal)


def scope_of(request: web.Request) -> Scope:
    """The caller's scope; fails closed to ``read`` if the middleware set none."""
    principal = request.get(PRINCIPAL)
    return principal.scope if principal is not None else Scope.READ
