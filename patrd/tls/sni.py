"""Server TLS contexts and the SNI callback that picks one per handshake.

Kept apart from ``certstore.py`` (files, parsing with ``cryptography``) so
that the proxy's worker processes, which only serve what the daemon sends
them, import ``ssl`` and nothing heavier.
"""

from __future__ import annotations

import ssl

__all__ = ["SniContexts", "server_context"]


def server_context() -> ssl.SSLContext:
    """Modern server settings: TLS 1.2+, forward-secret AEAD ciphers, HTTP/1.1 by ALPN.

    Measured for the proxy (scripts/bench/proxy): X25519 first is OpenSSL's
    default and its fastest key exchange; TLS 1.3 session tickets (2 per
    handshake, OpenSSL's default) let returning clients skip the full
    handshake; compression stays off (CRIME).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2; 1.3 suites are all AEAD
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
