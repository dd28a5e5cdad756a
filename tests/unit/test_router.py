"""The routing table: host normalization and (host, path) matching."""

from __future__ import annotations

import pytest

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable, normalize_host


def route(host: str, prefix: str = "/", deployment: str = "web") -> Route:
    return Route(
        host=host,
        path_prefix=prefix,
        deployment=deployment,
        port=8080,
        status=RouteStatus.RUNNING,
        backends=(Backend(instance=f"{deployment}-0", host="10.0.0.2", port=8080),),
    )


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("EXAMPLE.com:443", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:80", "example.com"),
        (" example.com ", "example.com"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]:8443", "2001:db8::1"),
        ("::1", "::1"),  # bare IPv6: no port to strip
        ("2001:db8::1", "2001:db8::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("localhost", "localhost"),
        ("", ""),
    ],
)
def test_normalize_host(raw: str, normalized: str) -> None:
    assert normalize_host(raw) == normalized


TABLE = RoutingTable.build(
    [
        route("app.test", "/", "root"),
        route("app.test", "/api", "api"),
        route("app.test", "/api/v2/", "api-v2"),
        route("app.test", "/static", "static"),
        route("other.test", "/only", "only"),
        route("::1", "/", "v6"),
    ]
)


@pytest.mark.parametrize(
    ("host", "path", "deployment"),
    [
        # The root prefix catches everything not claimed by a longer one.
        ("app.test", "/", "root"),
        ("app.test", "/index.html", "root"),
        ("app.test", "", "root"),
        # A prefix matches itself and below, on a segment boundary only.
        ("app.test", "/api", "api"),
        ("app.test", "/api/", "api"),
        ("app.test", "/api/users", "api"),
        ("app.test", "/apix", "root"),
        ("app.test", "/api-docs", "root"),
        # The longest prefix wins; a trailing slash on a prefix does not count.
        ("app.test", "/api/v2", "api-v2"),
        ("app.test", "/api/v2/users", "api-v2"),
        ("app.test", "/api/v20", "api"),
        ("app.test", "/static/app.js", "static"),
        # The host is normalized on the way in.
        ("APP.test", "/api", "api"),
        ("app.test:8080", "/api", "api"),
        ("app.test.", "/", "root"),
        ("App.Test.:80", "/static", "static"),
        ("[::1]:8080", "/x", "v6"),
        # A host without a root route matches only its prefixes.
        ("other.test", "/only", "only"),
        ("other.test", "/only/x", "only"),
        ("other.test", "/", None),
        ("other.test", "/onlyx", None),
        # Unknown hosts match nothing.
        ("unknown.test", "/", None),
        ("", "/", None),
        ("app.test.evil", "/", None),
    ],
)
def test_match(host: str, path: str, deployment: str | None) -> None:
    matched = TABLE.match(host, path)
    assert (matched.deployment if matched is not None else None) == deployment


@pytest.mark.parametrize(
    "routes",
    [
        [route("app.test", "/"), route("app.test", "/")],
        [route("app.test", "/api"), route("app.test", "/api", "other")],
        # Equivalent after normalization: trailing slash, host case, trailing dot.
        [route("app.test", "/api"), route("app.test", "/api/")],
        [route("app.test", "/"), route("APP.test.", "/")],
    ],
)
def test_duplicate_host_and_prefix_is_refused(routes: list[Route]) -> None:
    with pytest.raises(ValueError, match="duplicate route"):
        RoutingTable.build(routes)


def test_same_prefix_on_different_hosts_is_fine() -> None:
    table = RoutingTable.build([route("a.test", "/api", "a"), route("b.test", "/api", "b")])
    assert len(table) == 2
    assert table.match("a.test", "/api").deployment == "a"  # type: ignore[union-attr]
    assert table.match("b.test", "/api").deployment == "b"  # type: ignore[union-attr]


def test_empty_table_matches_nothing() -> None:
    assert len(RoutingTable()) == 0
    assert RoutingTable.build([]).match("app.test", "/") is None


def test_backend_keys() -> None:
    a = Backend(instance="web-0", host="10.0.0.2", port=80)
    b = Backend(instance="web-1", host="10.0.0.3", port=80)
    table = RoutingTable.build(
        [
            Route("x.test", "/", "x", 80, RouteStatus.RUNNING, (a, b)),
            Route("y.test", "/", "y", 80, RouteStatus.STOPPED, ()),
        ]
    )
    assert table.backend_keys() == {("10.0.0.2", 80), ("10.0.0.3", 80)}
