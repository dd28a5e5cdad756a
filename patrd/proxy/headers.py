"""Which request headers reach the upstream, and the forwarding headers we set. Pure.

The forwarding headers are ours: a client could otherwise tell the
application any address or scheme it likes. From every client the proxy
drops ``Forwarded``, ``X-Real-IP``, ``True-Client-IP``,
``X-Forwarded-Port``/``-Prefix``/``-Server`` and any header whose name holds
``_`` (``X_Forwarded_For`` becomes ``X-Forwarded-For`` in CGI-style
``HTTP_X_FORWARDED_FOR`` environments; nginx drops such names by default),
then sets ``X-Forwarded-For``/``-Proto``/``-Host`` and ``X-Real-IP``. A peer
in ``proxy.trusted_proxies`` keeps its ``X-Forwarded-For`` chain (the peer
appended) and its ``X-Forwarded-Proto``/``-Host``; ``X-Real-IP`` is then the
client that chain names.

The server classifies each header name once (:func:`request_header_kind`,
cached for the usual spellings); the kinds are the ``H_*`` constants.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLIENT_DROPPED",
    "H_CONNECTION",
    "H_CONTENT_LENGTH",
    "H_DROP",
    "H_HOST",
    "H_PASS",
    "H_TRANSFER_ENCODING",
    "H_UPGRADE",
    "H_XFF",
    "H_XFWD",
    "forwarding_lines",
    "request_header_kind",
]

H_PASS: Final = 0  # forwarded as is
H_HOST: Final = 1
H_CONTENT_LENGTH: Final = 2
H_TRANSFER_ENCODING: Final = 3
H_CONNECTION: Final = 4
H_UPGRADE: Final = 5
H_DROP: Final = 6  # never forwarded
H_XFF: Final = 7  # X-Forwarded-For: kept (appended to) from trusted proxies only
H_XFWD: Final = 8  # X-Forwarded-Proto/-Host: kept from trusted proxies only

# Client-chosen forwarding headers the application could take for ours.
CLIENT_DROPPED: Final = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"true-client-ip",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
    }
)

REQUEST_HEADERS: Final[dict[bytes, int]] = {
    b"host": H_HOST,
    b"content-length": H_CONTENT_LENGTH,
    b"transfer-encoding": H_TRANSFER_ENCODING,
    b"connection": H_CONNECTION,
    b"upgrade": H_UPGRADE,
    # hop-by-hop
    b"keep-alive": H_DROP,
    b"proxy-connection": H_DROP,
    b"te": H_DROP,
    b"trailer": H_DROP,
    # set by the proxy; taken from the client only if it is a trusted proxy
    b"x-forwarded-for": H_XFF,
    b"x-forwarded-proto": H_XFWD,
    b"x-forwarded-host": H_XFWD,
    **dict.fromkeys(CLIENT_DROPPED, H_DROP),
}


def request_header_kind(name: bytes) -> int:
    """What to do with a request header called ``name`` (any case): an ``H_*``."""
    kind = REQUEST_HEADERS.get(name.lower(), H_PASS)
    if kind == H_PASS and b"_" in name:
        return H_DROP
    return kind


def forwarding_lines(
    client: bytes, chain: bytes | None, scheme: bytes | None, host: bytes | None
) -> bytes:
    """The forwarding header lines for the upstream.

    ``client``: the address ``X-Real-IP`` names; ``chain``: the
    ``X-Forwarded-For`` value; ``scheme``/``host``: ``X-Forwarded-Proto`` and
    ``-Host`` values, or ``None`` when a trusted proxy sent its own.
    """
    lines = b"X-Forwarded-For: %b\r\nX-Real-IP: %b\r\n" % (chain or client, client)
    if scheme is not None:
        lines += b"X-Forwarded-Proto: %b\r\n" % scheme
    if host is not None:
        lines += b"X-Forwarded-Host: %b\r\n" % host
    return lines
