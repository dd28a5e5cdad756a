"""Session-ticket keys (patrd/tls/tickets.py): a ticket from one context resumes on another."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from patrd.tls.localca import LocalCA
from patrd.tls.sni import server_context
from patrd.tls.tickets import TICKET_KEY_BYTES, new_ticket_key, set_ticket_key
from tests.support.tls_memory import handshake, sni_listener

NAME = "tickets.localhost"  # inside the local CA's name constraints


def _listener(tmp_path: Path, ca: LocalCA) -> ssl.SSLContext:
    return sni_listener(tmp_path, ca, NAME)


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession | None]:
    """A handshake and one record each way, in memory."""
    c, s, c_in, s_out = handshake(server, client, NAME, session)
    s.write(b"x")
    c_in.write(s_out.read())
    assert c.read(1) == b"x"  # TLS 1.3 tickets come after the handshake
    return c.session_reused, c.session


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_shared_key_resumes_across_listeners(tmp_path: Path, version: ssl.TLSVersion) -> None:
    ca = LocalCA(tmp_path / "ca")
    one, two = _listener(tmp_path, ca), _listener(tmp_path, ca)
    key = new_ticket_key()
    assert set_ticket_key(one, key) and set_ticket_key(two, key)
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.minimum_version = client.maximum_version = version
    resumed, session = _handshake(one, client, None)
    assert not resumed and session is not None
    resumed, _ = _handshake(two, client, session)
    assert resumed


def test_without_a_shared_key_the_other_listener_cannot_resume(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ca")
    one, two = _listener(tmp_path, ca), _listener(tmp_path, ca)
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    _, session = _handshake(one, client, None)
    assert _handshake(one, client, session)[0]  # its own ticket: resumed
    assert not _handshake(two, client, session)[0]


def test_a_key_has_one_length() -> None:
    assert len(new_ticket_key()) == TICKET_KEY_BYTES
    with pytest.raises(ValueError, match="80 bytes"):
        set_ticket_key(server_context(), b"short")
