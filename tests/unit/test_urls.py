"""Managed URLs: spec validation, their routes (pure) and the store's rules."""

from __future__ import annotations

from typing import Any

import pytest

from patrd.control.route_table import DeploymentSnapshot, ReadyInstance, build_routes
from patrd.model.deployment import Intent, Status
from patrd.model.errors import Conflict, SpecError
from patrd.model.spec import parse_create as parse_deployment
from patrd.model.urls import (
    DeploymentTarget,
    ProxyTarget,
    RedirectTarget,
    UrlRecord,
    UrlSpec,
    parse_create,
    parse_update,
    spec_from_json,
)
from patrd.proxy.router import Route, RouteStatus, RoutingTable, redirect_location
from patrd.state.store import Store

# --- validation -------------------------------------------------------------------


def test_parse_defaults_and_normalizes() -> None:
    spec = parse_create(
        {"domain": "App.Example.COM.", "path": "/api/", "target": {"deployment": "web", "port": 80}}
    )
    assert spec == UrlSpec("app.example.com", "/api", DeploymentTarget("web", 80), True)
    assert parse_create(
        {"domain": "a.example.com", "target": {"redirect": "https://b.example/x"}},
        default_http_redirect=False,
    ) == UrlSpec("a.example.com", "/", RedirectTarget("https://b.example/x", True), False)
    assert spec_from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": {"proxy": "http://a.b"}}, "domain"),
        ({"domain": "a.example.com"}, "target"),
        ({"domain": "localhost", "target": {"proxy": "http://a.b"}}, "domain"),
        ({"domain": "*.example.com", "target": {"proxy": "http://a.b"}}, "domain"),
        ({"domain": "a_b.example.com", "target": {"proxy": "http://a.b"}}, "domain"),
        ({"domain": "1.2.3.4", "target": {"proxy": "http://a.b"}}, "domain"),
        ({"domain": "a.example.com", "path": "api", "target": {"proxy": "http://a.b"}}, "path"),
        ({"domain": "a.example.com", "path": "/a/../b", "target": {"proxy": "http://a.b"}}, "path"),
        ({"domain": "a.example.com", "path": "/a?b", "target": {"proxy": "http://a.b"}}, "path"),
        ({"domain": "a.example.com", "path": "/a%zz", "target": {"proxy": "http://a.b"}}, "path"),
        ({"domain": "a.example.com", "target": {}}, "target"),
        ({"domain": "a.example.com", "target": {"proxy": "x", "redirect": "y"}}, "target"),
        ({"domain": "a.example.com", "target": {"deployment": "web"}}, "target.port"),
        ({"domain": "a.example.com", "target": {"deployment": "web", "port": 0}}, "target.port"),
        (
            {"domain": "a.example.com", "target": {"deployment": "web", "port": True}},
            "target.port",
        ),
        (
            {"domain": "a.example.com", "target": {"deployment": "Web", "port": 80}},
            "target.deployment",
        ),
        ({"domain": "a.example.com", "target": {"redirect": "ftp://x"}}, "target.redirect"),
        ({"domain": "a.example.com", "target": {"redirect": "https://x/#f"}}, "target.redirect"),
        ({"domain": "a.example.com", "target": {"proxy": "http://u:p@x"}}, "target.proxy"),
        ({"domain": "a.example.com", "target": {"proxy": "http://x/?q"}}, "target.proxy"),
        ({"domain": "a.example.com", "target": {"proxy": "http://x y"}}, "target.proxy"),
        (
            {"domain": "a.example.com", "target": {"redirect": "https://x", "port": 1}},
            "target.port",
        ),
        ({"domain": "a.example.com", "target": {"proxy": "http://x"}, "tls": 1}, "tls"),
        (
            {"domain": "a.example.com", "target": {"proxy": "http://x"}, "http_redirect": 1},
            "http_redirect",
        ),
    ],
)
def test_parse_names_the_bad_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_create(body)
    assert err.value.field == field


def test_update_replaces_given_fields_only() -> None:
    spec = parse_create(
        {"domain": "a.example.com", "target": {"proxy": "https://o.example:8443/b"}}
    )
    assert isinstance(spec.target, ProxyTarget)
    assert spec.target.parts == (True, "o.example", 8443, "/b")
    moved = parse_update(spec, {"path": "/new", "http_redirect": False})
    assert (moved.domain, moved.path, moved.target, moved.http_redirect) == (
        "a.example.com",
        "/new",
        spec.target,
        False,
    )
    with pytest.raises(SpecError) as err:
        parse_update(spec, {"domain": "nope"})
    assert err.value.field == "domain"


# --- routes (pure) ----------------------------------------------------------------


def _url(domain: str, path: str, target: Any, http_redirect: bool = True) -> UrlRecord:
    return UrlRecord(f"{domain}{path}", UrlSpec(domain, path, target, http_redirect), 0.0, 0.0)


def match(table: RoutingTable, host: str, path: str) -> Route:
    route = table.match(host, path)
    assert route is not None, (host, path)
    return route


WEB = DeploymentSnapshot("web", Status.RUNNING, (80, 8080), (ReadyInstance("web-0", "10.0.0.2"),))


def test_longest_prefix_wins_across_kinds() -> None:
    table = build_routes(
        [WEB],
        "apps.test",
        [
            _url("a.example.com", "/", DeploymentTarget("web", 80)),
            _url("a.example.com", "/api", DeploymentTarget("web", 8080)),
            _url("a.example.com", "/api/old", RedirectTarget("https://new.example/v2", False)),
            _url("a.example.com", "/ext", ProxyTarget("http://origin.example:8000/base")),
        ],
    )
    assert match(table, "a.example.com", "/x").port == 80
    assert match(table, "a.example.com", "/api").port == 8080
    assert match(table, "a.example.com", "/api/v1").port == 8080
    assert match(table, "a.example.com", "/apix").port == 80  # segment boundary
    old = match(table, "a.example.com", "/api/old/thing")
    assert old.redirect == "https://new.example/v2" and old.redirect_status == 307
    ext = match(table, "A.Example.com:443", "/ext/y")
    assert (ext.upstream_host, ext.upstream_path) == ("origin.example:8000", "/base")
    assert ext.backends[0].host == "origin.example" and not ext.backends[0].tls
    assert match(table, "80-web.apps.test", "/").deployment == "web"  # default hosts stay
    assert table.hosts() == {"a.example.com", "80-web.apps.test", "8080-web.apps.test"}


def test_url_route_follows_its_deployment() -> None:
    stopped = DeploymentSnapshot("web", Status.STOPPED, (80,), ())
    url = _url("a.example.com", "/", DeploymentTarget("web", 80))
    route = match(build_routes([stopped], "t", [url]), "a.example.com", "/")
    assert route.status is RouteStatus.STOPPED and route.backends == ()
    route = match(build_routes([WEB], "t", [url]), "a.example.com", "/")
    assert route.status is RouteStatus.RUNNING and route.backends[0].port == 80
    assert route.special and route.https_redirect
    gone_port = _url("a.example.com", "/", DeploymentTarget("web", 9999))
    gone = match(build_routes([WEB], "t", [gone_port]), "a.example.com", "/")
    assert gone.status is RouteStatus.ERRORED
    plain = build_routes(
        [WEB], "t", [_url("b.example.com", "/", DeploymentTarget("web", 80), False)]
    )
    assert not match(plain, "b.example.com", "/").special
    assert not match(plain, "80-web.t", "/").special


def test_a_url_on_a_default_hostname_replaces_the_default_route() -> None:
    table = build_routes(
        [WEB], "t", [_url("80-web.t", "/", RedirectTarget("https://elsewhere.example/"))]
    )
    assert match(table, "80-web.t", "/x").redirect == "https://elsewhere.example/"


@pytest.mark.parametrize(
    ("base", "prefix", "target", "location"),
    [
        ("https://new.example", "/", "/a/b?x=1", "https://new.example/a/b?x=1"),
        ("https://new.example/", "/", "/", "https://new.example/"),
        ("https://new.example", "/", "/", "https://new.example/"),
        ("https://new.example/v2", "/old", "/old/a?x=1&y=2", "https://new.example/v2/a?x=1&y=2"),
        ("https://new.example/v2", "/old", "/old", "https://new.example/v2"),
        ("https://new.example/v2/", "/old", "/old/", "https://new.example/v2/"),
        (
            "https://new.example/v2?src=old",
            "/old",
            "/old/a?x=1",
            "https://new.example/v2/a?src=old&x=1",
        ),
        ("https://new.example/v2?src=old", "/old", "/old", "https://new.example/v2?src=old"),
        ("http://h.example:8080", "/", "/p?", "http://h.example:8080/p"),
    ],
)
def test_redirects_keep_the_rest_of_the_path_and_the_query(
    base: str, prefix: str, target: str, location: str
) -> None:
    assert redirect_location(base, prefix, target) == location


# --- store rules --------------------------------------------------------------------


async def test_domain_and_path_are_unique_and_targets_must_exist(store: Store) -> None:
    await store.create_deployment(
        parse_deployment(
            {"name": "web", "image": "library/nginx", "ports": {"80": "http"}}, region="local"
        )
    )
    first = await store.create_url(
        parse_create({"domain": "a.example.com", "target": {"deployment": "web", "port": 80}})
    )
    with pytest.raises(Conflict, match="already exists"):
        await store.create_url(
            parse_create({"domain": "A.example.com.", "path": "/", "target": {"proxy": "http://x"}})
        )
    other = await store.create_url(
        parse_create({"domain": "a.example.com", "path": "/api", "target": {"proxy": "http://x"}})
    )
    with pytest.raises(Conflict, match="already exists"):
        await store.update_url(other.id, lambda s: parse_update(s, {"path": "/"}))
    with pytest.raises(SpecError) as err:
        await store.create_url(
            parse_create({"domain": "b.example.com", "target": {"deployment": "nope", "port": 80}})
        )
    assert err.value.field == "target.deployment"
    with pytest.raises(SpecError) as err:
        await store.create_url(
            parse_create({"domain": "b.example.com", "target": {"deployment": "web", "port": 81}})
        )
    assert err.value.field == "target.port"
    assert [u.id for u in await store.list_urls()] == [first.id, other.id]


async def test_a_deployment_with_urls_cannot_be_deleted(store: Store) -> None:
    await store.create_deployment(
        parse_deployment(
            {"name": "web", "image": "library/nginx", "ports": {"80": "http"}}, region="local"
        )
    )
    url = await store.create_url(
        parse_create({"domain": "a.example.com", "target": {"deployment": "web", "port": 80}})
    )
    with pytest.raises(Conflict, match=r"a\.example\.com/ \(id " + url.id):
        await store.set_intent("web", Intent.DELETE)
    await store.delete_url(url.id)
    assert (await store.set_intent("web", Intent.DELETE)).intent is Intent.DELETE


async def test_certificate_state_round_trips(store: Store) -> None:
    await store.put_cert_state("a.example.com", {"failures": 2, "orders": [1.5]})
    await store.put_cert_state("a.example.com", {"failures": 0, "orders": []})
    assert await store.cert_states() == {"a.example.com": {"failures": 0, "orders": []}}


@pytest.mark.parametrize(
    ("value", "ok"),
    [(None, True), (1024, True), (10 << 30, True), (10, False), ("1", False), (True, False)],
)
def test_body_limit_per_url_is_validated(value, ok):
    from patrd.model.urls import parse_create as parse_url

    body = {
        "domain": "a.example",
        "target": {"redirect": "https://b.example"},
        "max_body_bytes": value,
    }
    if ok:
        assert parse_url(body).max_body_bytes == value
    else:
        with pytest.raises(SpecError) as info:
            parse_url(body)
        assert info.value.field == "max_body_bytes"
