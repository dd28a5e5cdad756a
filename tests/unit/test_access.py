"""The scope decision (patrd/model/scopes.py): a pure function over one table."""

from __future__ import annotations

import pytest

from patrd.api.app import build_app
from patrd.model.scopes import (
    RULES,
    Rule,
    Scope,
    decide,
    deployment_in,
    new_token,
    parse_duration,
    required_scope,
    token_digest,
)
from patrd.settings.config import Config

R, D, W, A = Scope.READ, Scope.DEPLOY, Scope.WRITE, Scope.ADMIN
DEP = "/v1/deployments/{name}"

# (method, route pattern, the scope it needs): every route served today, and
# some that others are adding (the table answers for them already).
SCOPE_TABLE = [
    ("GET", "/v1/openapi.json", R),
    ("GET", "/metrics", R),
    ("GET", "/v1/firewall", R),
    ("GET", "/v1/deployments", R),
    ("GET", DEP, R),
    ("GET", DEP + "/instances", R),
    ("GET", DEP + "/events", R),
    ("GET", DEP + "/history", R),
    ("GET", DEP + "/logs", R),
    ("GET", DEP + "/metrics", R),
    ("GET", DEP + "/volumes", R),
    ("GET", DEP + "/config/{file}", R),
    ("GET", "/v1/secrets", R),
    ("GET", "/v1/secrets/{name}", R),
    ("GET", "/v1/urls", R),
    ("GET", "/v1/urls/{id}", R),
    ("GET", "/v1/certificates", R),
    ("POST", DEP + "/start", D),
    ("POST", DEP + "/stop", D),
    ("POST", DEP + "/redeploy", D),  # not served yet
    ("POST", DEP + "/history/{digest}/revert", D),
    ("POST", "/v1/deployments", W),
    ("PATCH", DEP, W),
    ("DELETE", DEP, W),
    ("PUT", DEP + "/config/{file}", W),
    ("DELETE", DEP + "/config/{file}", W),
    ("POST", "/v1/secrets", W),
    ("PUT", "/v1/secrets/{name}", W),
    ("DELETE", "/v1/secrets/{name}", W),
    ("POST", "/v1/urls", W),
    ("PATCH", "/v1/urls/{id}", W),
    ("DELETE", "/v1/urls/{id}", W),
    ("POST", DEP + "/exec", W),  # not served yet
    ("GET", DEP + "/jobs/{job}", W),
    ("POST", DEP + "/run", W),
    ("GET", "/v1/tokens", A),
    ("POST", "/v1/tokens", A),
    ("DELETE", "/v1/tokens/{name}", A),
    ("GET", "/v1/audit", A),
    ("POST", "/v1/backup", A),
    ("GET", "/v1/notifications", R),
    ("POST", "/v1/notifications", A),
    ("GET", "/v1/node/settings", R),
    ("PUT", "/v1/node/settings", A),
    ("GET", "/v1/backups/{id}", R),
    ("DELETE", "/v1/backups/{id}", A),
    ("GET", "/v1/backups", R),
    ("GET", "/v1/backups/jobs/{id}", R),
    ("GET", "/v1/backups/{id}/state", A),
    ("POST", "/v1/backups", A),
    ("POST", "/v1/backups/{id}/restore", A),
    ("GET", "/v1/registry/login", A),
    ("GET", "/v1/node", R),
    ("GET", "/v1/nodes", A),
    ("POST", "/v1/nodes/{node}/drain", A),
    ("POST", "/v1/nodes/{node}/activate", A),
    ("POST", DEP + "/revert", D),
    ("GET", DEP + "/exec/{id}/attach", W),  # a GET that runs code: write
    ("GET", DEP + "/jobs", R),
    ("GET", DEP + "/jobs/{job}/runs", R),
    ("GET", DEP + "/jobs/{job}/runs/{id}", R),
    ("POST", DEP + "/jobs/{job}/run", W),
    ("DELETE", "/v1/notifications/{notification}", A),
    ("POST", "/v1/notifications/{notification}/test", W),
    # Fail closed: whatever the table does not name needs admin.
    ("GET", "/v1/something-new", A),
    ("POST", DEP + "/something-new", A),
    ("PUT", DEP + "/start", A),  # a method the table does not list for the route
    ("GET", "/v1/deployments/{name}/instances/{id}", A),
    ("GET", "/v1/deploymentsX", A),
    ("GET", "/v1/tokensX", A),
    ("GET", "/v1/notificationsX", A),  # a /** prefix matches whole segments only
]


@pytest.mark.parametrize(("method", "pattern", "needed"), SCOPE_TABLE)
def test_the_scope_each_route_needs(method: str, pattern: str, needed: Scope) -> None:
    assert required_scope(method, pattern) is needed


@pytest.mark.parametrize(("method", "pattern", "needed"), SCOPE_TABLE)
@pytest.mark.parametrize("scope", list(Scope))
def test_a_scope_allows_exactly_the_routes_at_or_below_it(
    method: str, pattern: str, needed: Scope, scope: Scope
) -> None:
    decision = decide(method, pattern, scope)
    assert decision.allowed is (scope >= needed)
    assert decision.needed is needed
    if not decision.allowed:
        assert f"'{needed.label}'" in decision.reason


def test_no_route_matched_needs_admin() -> None:
    assert required_scope("GET", None) is A
    assert not decide("GET", None, W).allowed
    assert decide("GET", None, A).allowed


def test_every_served_route_is_in_the_table_as_expected() -> None:
    """A new route added without a table entry shows up here (as admin-only)."""
    app = build_app(None, None, Config(), token=None)  # type: ignore[arg-type]
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    expected = {(m, p): s for m, p, s in SCOPE_TABLE}
    public = {("GET", "/v1/health"), ("POST", "/v1/registry/events")}
    missing = served - public - set(expected)
    assert not missing, f"add these routes to SCOPE_TABLE (and RULES): {sorted(missing)}"


LIMITED = frozenset({"web", "api"})


@pytest.mark.parametrize(
    ("method", "pattern", "scope", "deployment", "allowed"),
    [
        ("POST", DEP + "/start", D, "web", True),
        ("POST", DEP + "/start", D, "db", False),  # not one of its deployments
        ("GET", DEP, R, "db", False),
        ("GET", DEP, R, "web", True),
        ("GET", "/v1/deployments", R, None, True),  # reads outside deployments
        ("PATCH", DEP, W, "api", True),
        ("POST", "/v1/deployments", W, None, False),  # creating reaches beyond its list
        ("POST", "/v1/urls", W, None, False),
        ("PUT", "/v1/secrets/{name}", W, None, False),
        ("POST", DEP + "/stop", R, "web", False),  # its scope still applies
    ],
)
def test_a_token_limited_to_deployments(
    method: str, pattern: str, scope: Scope, deployment: str | None, allowed: bool
) -> None:
    assert decide(method, pattern, scope, LIMITED, deployment).allowed is allowed


def test_a_more_specific_rule_wins() -> None:
    rules = (
        Rule("*", "/v1/x/**", A),
        Rule("GET", "/v1/x/**", R),
        Rule("POST", "/v1/x/y", D),
    )
    assert required_scope("GET", "/v1/x/z", rules) is R
    assert required_scope("PUT", "/v1/x/z", rules) is A
    assert required_scope("POST", "/v1/x/y", rules) is D
    assert required_scope("GET", "/v1/x", rules) is R


def test_the_table_has_no_duplicate_entries() -> None:
    keys = [(rule.method, rule.pattern) for rule in RULES]
    assert len(keys) == len(set(keys))


def test_deployment_named_in_the_path() -> None:
    assert deployment_in(DEP + "/start", {"name": "web"}) == "web"
    assert deployment_in(DEP, {"name": "web"}) == "web"
    assert deployment_in("/v1/secrets/{name}", {"name": "db-password"}) is None
    assert deployment_in(None, {"name": "web"}) is None


def test_tokens_are_random_and_only_their_digest_matches() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("patr_") and len(a) >= 40
    digest = token_digest(a)
    assert len(digest) == 64 and a not in digest
    assert token_digest(a) == digest != token_digest(b)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 1209600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "30", "d", "-1d", "1y", "4000w", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_scope_names() -> None:
    assert Scope.parse("deploy") is D
    assert Scope.parse("ADMIN") is A
    with pytest.raises(ValueError, match="one of"):
        Scope.parse("root")
