"""TLS in memory for unit tests: a listener context like a proxy worker's, a handshake over BIOs."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

from patrd.tls.certstore import generate_key
from patrd.tls.localca import LocalCA
from patrd.tls.sni import SniContexts, server_context


def sni_listener(pem_dir: Path, ca: LocalCA, name: str) -> ssl.SSLContext:
    """A worker's listener: SNI dispatch to ``name``'s context, as in patrd/proxy/worker.py."""
    key = generate_key()
    pem = pem_dir / f"{name}.pem"
    pem.write_bytes(key + ca.issue(name, key))
    named = server_context()
    named.load_cert_chain(pem)
    sni = SniContexts()
    sni.contexts = {name: named}
    return sni.listener_context()


def handshake(
    server: ssl.SSLContext,
    client: ssl.SSLContext,
    name: str,
    session: ssl.SSLSession | None = None,
) -> tuple[ssl.SSLObject, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """Both sides through the handshake: client, server, the client's inbound BIO, the
    server's outbound one."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name, session=session)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):  # bounded: a handshake takes a few flights
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if c.version() is not None and s.version() is not None and not c_out.pending:
            break
    return c, s, c_in, s_out
