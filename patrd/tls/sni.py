"""Server TLS contexts and the SNI callback that picks one per handshake.

Kept apart from ``certstore.py`` (files, parsing with ``cryptography``) so
that the proxy's worker processes, which only serve what the daemon sends
them, import ``ssl`` and nothing heavier.
"""

from __future__ import annotations

import ssl
from typing import Final

from patrd.tls.openssl_ctx import set_tls13_suites

__all__ = ["TLS12_CIPHERS", "TLS13_SUITES", "SniContexts", "server_context"]


# AES-128-GCM with SHA-256 first (as Go's crypto/tls and Mozilla's guidelines
# order them): the TLS 1.3 key schedule and transcript hash run on SHA-256,
# which current x86 and ARM CPUs have instructions for and SHA-384 has not.
# Measured here: the server side of a resumed handshake about 180 -> 165 us (with
# the bench client, which orders SHA-384 first, as nginx lets it). ChaCha20
# still wins for a client that lists it first (no AES hardware): _PRIORITIZE_CHACHA.
TLS13_SUITES: Final = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
TLS12_CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)
_PRIORITIZE_CHACHA: Final = 1 << 21  # SSL_OP_PRIORITIZE_CHACHA; Python's ssl has no name for it


def server_context() -> ssl.SSLContext:
    """Modern server settings: TLS 1.2+, forward-secret AEAD suites, HTTP/1.1 by ALPN.

    Measured for the proxy (scripts/bench/proxy): X25519 first is OpenSSL's
    default and its fastest key exchange; TLS 1.3 session tickets (2 per
    handshake, OpenSSL's default) let returning clients skip the full
    handshake; compression stays off (CRIME). The server's suite order
    decides; if the TLS 1.3 order cannot be set (not CPython's ``_ssl``),
    OpenSSL's default order stays, which is as safe and a little slower.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION | _PRIORITIZE_CHACHA
    ctx.set_ciphers(TLS12_CIPHERS)
    set_tls13_suites(ctx, TLS13_SUITES)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class SniContexts:
    """One server context per hostname; the listener's context dispatches by SNI.

    ``contexts`` is replaced or updated with single dict operations, so a
    handshake sees either the old or the new certificate of a name.
    """

    __slots__ = ("contexts",)

    def __init__(self) -> None:
        self.contexts: dict[str, ssl.SSLContext] = {}

    def has(self, name: str) -> bool:
        """A certificate is served for ``name`` (exactly, or by a wildcard)."""
        contexts = self.contexts
        return name in contexts or "*." + name.partition(".")[2] in contexts

    def listener_context(self) -> ssl.SSLContext:
        """The context of the HTTPS listeners: it only dispatches by SNI."""
        ctx = server_context()
        ctx.sni_callback = self._sni
        return ctx

    def _sni(
        self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        contexts = self.contexts
        ctx = None
        if server_name is not None:
            name = server_name.lower().rstrip(".")
            ctx = contexts.get(name)
            if ctx is None:
                ctx = contexts.get("*." + name.partition(".")[2])
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_obj.context = ctx
        return None
