"""Request targets and Host headers: normalised before routing. Pure, no I/O.

The proxy routes on the path it forwards. Without normalisation another
spelling of a path (``/%61dmin``, ``//admin``, ``/x/../admin``) would miss a
path-prefix route and reach the ``/`` route's application, which then
normalises it to the path the prefix route was meant to own.

:func:`normalize_path` (RFC 3986 §6.2.2): percent-encoded unreserved
characters are decoded and the other escapes upper-cased, repeated slashes
merged, dot segments removed (§5.2.4). The result never holds ``.`` or
``..`` segments, so joining it to a proxy target's base path cannot climb
above that base.

:func:`parse_host`: a Host header (or an absolute-form authority) must be a
DNS name or an IP literal with an optional numeric port; anything else
(``a.test:@evil.test``, ``a.test/x``, spaces) is refused.

The server keeps both cheap for what nearly every request sends: an already
normal path costs one regex search (:data:`needs_normalizing`), and Host
values are parsed once each (cached).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = [
    "has_encoded_slash",
    "join_base",
    "needs_normalizing",
    "normalize_path",
    "parse_host",
    "remove_dot_segments",
    "slash_in_route_segments",
]

# Bytes whose presence sends a path to the slow path. Everything else in a
# path llhttp accepted is kept as is.
# (A character class first: about twice as fast as five alternatives.)
_SLOW: Final = re.compile(rb"[%#\\]|/[/.]")
# ``needs_normalizing(path)`` is falsy for a path already normal (the fast path).
needs_normalizing: Final = _SLOW.search
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def normalize_path(path: bytes) -> bytes | None:
    """The normal form of an origin-form path (no query), or ``None`` if malformed.

    ``/a/./b/../c`` → ``/a/c``; ``//admin`` → ``/admin``; ``/%61dmin`` →
    ``/admin``; ``/%2e%2E/x`` → ``/x``; ``/a%2fb`` → ``/a%2Fb`` (kept
    encoded: see :func:`has_encoded_slash`). A bad escape (``%zz``), a ``#``
    or a path not starting with ``/`` is malformed.
    """
    if not needs_normalizing(path):
        return path if path[:1] == b"/" else None
    if path[:1] != b"/" or b"#" in path:
        return None
    if b"%" in path:
        decoded = _decode_unreserved(path)
        if decoded is None:
            return None
        path = decoded
    while b"//" in path:
        path = path.replace(b"//", b"/")
    if b"/." in path:
        path = remove_dot_segments(path)
    return path


def _decode_unreserved(path: bytes) -> bytes | None:
    parts = path.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            return None
        code = int(part[:2], 16)
        if code in _UNRESERVED:
            out.append(bytes((code,)) + part[2:])
        else:
            out.append(b"%" + part[:2].upper() + part[2:])
    return b"".join(out)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 for an absolute path: ``/a/b/c/./../../g`` → ``/a/g``."""
    out: list[bytes] = []
    segments = path.split(b"/")[1:]
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == b".":
            if i == last:
                out.append(b"")
        elif segment == b"..":
            if out:
                out.pop()
            if i == last:
                out.append(b"")
        else:
            out.append(segment)
    return b"/" + b"/".join(out)


def has_encoded_slash(path: bytes) -> bool:
    """``path`` (normalised: escapes upper-case) holds ``%2F`` or ``%5C``, or a raw backslash.

    A segment holding one means something else to an application that
    decodes it before routing (and Windows servers take a backslash for a
    slash).
    """
    return b"%2F" in path or b"%5C" in path or b"\\" in path


def slash_in_route_segments(path: bytes, depth: int) -> bool:
    """An escaped or raw slash sits in one of the first ``depth`` segments of
    ``path``, or decoding the escapes would make a dot segment anywhere.

    Those are the segments that decide which path-prefix route matches (the
    host's deepest prefix has ``depth`` segments); a dot segment made by
    decoding could climb back into them in an application that decodes
    before resolving dots.
    """
    segments = path.split(b"/")[1:]
    for i, segment in enumerate(segments):
        if not has_encoded_slash(segment):
            continue
        if i < depth:
            return True
        spelled = segment.replace(b"%2F", b"/").replace(b"%5C", b"/").replace(b"\\", b"/")
        if any(part in (b".", b"..") for part in spelled.split(b"/")):
            return True
    return False


def join_base(base: bytes, path: bytes) -> bytes:
    """A proxy target's base path + a normalised request path (starting with ``/``).

    ``path`` has no dot segments (:func:`normalize_path`), so the result
    stays under ``base``; a base ending with ``/`` does not double it.
    """
    if not base:
        return path
    return base.rstrip(b"/") + path


# --- Host ---------------------------------------------------------------------

# A DNS name (labels of letters, digits, "-" and "_", which some internal
# names carry), an IPv4 address being one, with an optional trailing dot and
# an optional numeric port.
_NAME: Final = re.compile(
    rb"((?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)(?::([0-9]{0,5}))?"
)
_BRACKETED: Final = re.compile(rb"\[([0-9A-Fa-f:.]+)\](?::([0-9]{0,5}))?")
_MAX_NAME: Final = 253


def parse_host(raw: bytes) -> tuple[str, bytes] | None:
    """Validate a Host header value; ``None`` if it is not ``name[:port]``.

    Returns the name the routing table is keyed by (lowercase, no trailing
    dot, no port, IPv6 without brackets) and the value forwarded upstream
    (lowercase, no trailing dot, the port kept when given, IPv6 in brackets
    as sent). ``APP.test.:8080`` → ``("app.test", b"app.test:8080")``.
    """
    raw = raw.strip(b" \t")
    match = _NAME.fullmatch(raw)
    if match is not None:
        name, port = match.group(1).rstrip(b".").lower(), match.group(2)
        if len(name) > _MAX_NAME or (port is not None and not _port_ok(port)):
            return None
        text = name.decode("ascii")
        return text, name + b":" + port if port else name
    match = _BRACKETED.fullmatch(raw)
    if match is None:
        return None
    address, port = match.group(1).decode("ascii"), match.group(2)
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    if port is not None and not _port_ok(port):
        return None
    text = str(ip)
    forward = b"[" + text.encode("ascii") + b"]"
    return text, forward + b":" + port if port else forward


def _port_ok(port: bytes) -> bool:
    """An empty port is allowed (RFC 3986 ``port = *DIGIT``); else 0-65535."""
    return not port or int(port) <= 65535
