"""Path normalisation, Host syntax, request-header policy (patrd/proxy/target.py, headers.py)."""

from __future__ import annotations

import pytest

from patrd.proxy.headers import (
    H_CONNECTION,
    H_DROP,
    H_HOST,
    H_PASS,
    H_XFF,
    H_XFWD,
    forwarding_lines,
    request_header_kind,
)
from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.target import (
    join_base,
    needs_normalizing,
    normalize_path,
    parse_host,
    remove_dot_segments,
    slash_in_route_segments,
)


# RFC 3986 §5.4 (reference resolution examples, as absolute paths) and §5.2.4.
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/a/b/c/./../../g", b"/a/g"),
        (b"/mid/content=5/../6", b"/mid/6"),
        (b"/b/c/./g", b"/b/c/g"),
        (b"/b/c/.", b"/b/c/"),
        (b"/b/c/./", b"/b/c/"),
        (b"/b/c/..", b"/b/"),
        (b"/b/c/../", b"/b/"),
        (b"/b/c/../g", b"/b/g"),
        (b"/b/c/../..", b"/"),
        (b"/b/c/../../g", b"/g"),
        (b"/b/c/../../../g", b"/g"),
        (b"/b/c/../../../../g", b"/g"),
        (b"/./g", b"/g"),
        (b"/../g", b"/g"),
        (b"/g.", b"/g."),
        (b"/.g", b"/.g"),
        (b"/g..", b"/g.."),
        (b"/..g", b"/..g"),
        (b"/b/c/./../g", b"/b/g"),
        (b"/b/c/./g/.", b"/b/c/g/"),
        (b"/b/c/g/./h", b"/b/c/g/h"),
        (b"/b/c/g/../h", b"/b/c/h"),
        (b"/.", b"/"),
        (b"/..", b"/"),
    ],
)
def test_rfc3986_dot_segments(path: bytes, expected: bytes) -> None:
    assert remove_dot_segments(path) == expected
    assert normalize_path(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # bypass spellings of /admin
        (b"/%61dmin", b"/admin"),
        (b"/%61%64%6D%69%6e", b"/admin"),
        (b"//admin", b"/admin"),
        (b"///admin//x", b"/admin/x"),
        (b"/x/../admin", b"/admin"),
        (b"/./admin", b"/admin"),
        (b"/%2e/admin", b"/admin"),
        (b"/%2E%2E/admin", b"/admin"),
        (b"/x/%2e%2e/admin", b"/admin"),
        (b"/x/.%2E/admin", b"/admin"),
        (b"/x//../admin", b"/admin"),  # slashes merged first
        (b"/admin/../../../etc", b"/etc"),
        # escapes of reserved characters stay (upper-cased)
        (b"/a%2fb", b"/a%2Fb"),
        (b"/a%3fb", b"/a%3Fb"),
        (b"/a%20b", b"/a%20b"),
        (b"/%7euser", b"/~user"),
        (b"/.well-known/acme-challenge/tok", b"/.well-known/acme-challenge/tok"),
        # already normal: returned as is
        (b"/", b"/"),
        (b"/api/v1/items", b"/api/v1/items"),
        (b"/a.b/c-d_e~f", b"/a.b/c-d_e~f"),
    ],
)
def test_normalize_path(path: bytes, expected: bytes) -> None:
    assert normalize_path(path) == expected


@pytest.mark.parametrize("path", [b"/%zz", b"/%4", b"/a%", b"/a#frag", b"admin", b"", b"%2Fadmin"])
def test_malformed_paths(path: bytes) -> None:
    assert normalize_path(path) is None


def test_fast_path_only_for_normal_paths() -> None:
    for normal in (b"/", b"/api/x", b"/a.b/c"):
        assert not needs_normalizing(normal)
    for odd in (b"/%61", b"//a", b"/./a", b"/a/..", b"/a\\b", b"/a#b"):
        assert needs_normalizing(odd)


@pytest.mark.parametrize(
    ("path", "depth", "refused"),
    [
        (b"/admin%2Fx", 1, True),  # in the segment the /admin route depends on
        (b"/x/a%2Fb", 1, False),  # deeper than any prefix: an app's business
        (b"/x/a%2Fb", 2, True),
        (b"/a%5Cb", 1, True),
        (b"/a\\b", 1, True),
        (b"/x/y/..%2F..%2Fadmin", 1, True),  # decoding would make dot segments
        (b"/x/y/%2E%2E%5Cadmin", 0, True),
        (b"/files/a%2Fb", 0, False),  # a host with only "/": nothing to bypass
    ],
)
def test_encoded_slashes(path: bytes, depth: int, refused: bool) -> None:
    normal = normalize_path(path)
    assert normal is not None
    assert slash_in_route_segments(normal, depth) is refused


def test_join_base_stays_under_the_base() -> None:
    assert join_base(b"/base", b"/x") == b"/base/x"
    assert join_base(b"/base/", b"/x") == b"/base/x"
    assert join_base(b"", b"/x") == b"/x"
    climbing = normalize_path(b"/../../etc/passwd")
    assert climbing is not None
    assert join_base(b"/base", climbing) == b"/base/etc/passwd"


def test_prefix_depth() -> None:
    def route(host: str, prefix: str) -> Route:
        return Route(host, prefix, "d", 80, RouteStatus.RUNNING, (Backend("i", "h", 1),))

    table = RoutingTable.build(
        [route("a.test", "/"), route("a.test", "/admin/x"), route("b.test", "/")]
    )
    assert table.prefix_depth("a.test") == 2
    assert table.prefix_depth("b.test") == 0
    assert table.prefix_depth("c.test") == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"app.test", ("app.test", b"app.test")),
        (b"APP.Test", ("app.test", b"app.test")),
        (b"app.test.", ("app.test", b"app.test")),
        (b"app.test:8080", ("app.test", b"app.test:8080")),
        (b"app.test.:8080", ("app.test", b"app.test:8080")),
        (b"app.test:", ("app.test", b"app.test")),
        (b"localhost", ("localhost", b"localhost")),
        (b"80-web.localhost", ("80-web.localhost", b"80-web.localhost")),
        (b"my_host.internal", ("my_host.internal", b"my_host.internal")),
        (b"192.0.2.1", ("192.0.2.1", b"192.0.2.1")),
        (b"192.0.2.1:80", ("192.0.2.1", b"192.0.2.1:80")),
        (b"[::1]", ("::1", b"[::1]")),
        (b"[2001:DB8::1]:443", ("2001:db8::1", b"[2001:db8::1]:443")),
        (b" app.test ", ("app.test", b"app.test")),
    ],
)
def test_valid_hosts(raw: bytes, expected: tuple[str, bytes]) -> None:
    assert parse_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"app.example.com:@evil.example",
        b"a.test:@evil.test",
        b"user@a.test",
        b"a.test/x",
        b"a.test?x",
        b"a.test#x",
        b"a test",
        b"a.test:80:80",
        b"a.test:port",
        b"a.test:99999",
        b"a.test:123456",
        b"-a.test",
        b"a-.test",
        b"a..test",
        b".a.test",
        b"",
        b"[::1",
        b"[not-ip]",
        b"[::1]x",
        b"::1",
        b"a" * 64 + b".test",
        b"\xc3\xa9.test",
        b"a.test\\evil",
    ],
)
def test_invalid_hosts(raw: bytes) -> None:
    assert parse_host(raw) is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (b"Host", H_HOST),
        (b"Connection", H_CONNECTION),
        (b"X-Forwarded-For", H_XFF),
        (b"x-forwarded-proto", H_XFWD),
        (b"X-Forwarded-Host", H_XFWD),
        (b"Forwarded", H_DROP),
        (b"X-Real-IP", H_DROP),
        (b"x-real-ip", H_DROP),
        (b"True-Client-IP", H_DROP),
        (b"X-Forwarded-Port", H_DROP),
        (b"X-Forwarded-Prefix", H_DROP),
        (b"X-Forwarded-Server", H_DROP),
        (b"X_Forwarded_For", H_DROP),
        (b"X-Real_IP", H_DROP),
        (b"my_header", H_DROP),
        (b"Keep-Alive", H_DROP),
        (b"X-Request-Id", H_PASS),
        (b"Authorization", H_PASS),
        (b"X-Forwarded-Foo", H_PASS),
    ],
)
def test_request_header_policy(name: bytes, kind: int) -> None:
    assert request_header_kind(name) == kind


def test_forwarding_lines() -> None:
    assert forwarding_lines(b"192.0.2.1", None, b"https", b"a.test") == (
        b"X-Forwarded-For: 192.0.2.1\r\nX-Real-IP: 192.0.2.1\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: a.test\r\n"
    )
    # behind a trusted proxy: its chain, the client it names, its proto and host
    assert forwarding_lines(b"198.51.100.7", b"198.51.100.7, 10.0.0.1", None, None) == (
        b"X-Forwarded-For: 198.51.100.7, 10.0.0.1\r\nX-Real-IP: 198.51.100.7\r\n"
    )
