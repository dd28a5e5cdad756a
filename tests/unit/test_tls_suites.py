"""The proxy's cipher-suite order (patrd/tls/sni.py): the server's order decides, AES-128 first."""

from __future__ import annotations

import ssl

import pytest

from patrd.tls.localca import LocalCA
from patrd.tls.openssl_ctx import set_tls13_suites
from patrd.tls.sni import server_context
from tests.support.tls_memory import handshake, sni_listener

NAME = "suites.localhost"  # inside the local CA's name constraints


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory, ca: LocalCA) -> ssl.SSLContext:
    return sni_listener(tmp_path_factory.mktemp("certs"), ca, NAME)


def _negotiated(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """The suite a handshake in memory settles on (both sides agree)."""
    c, s, _, _ = handshake(server, client, NAME)
    client_suite, server_suite = c.cipher(), s.cipher()
    assert client_suite is not None and server_suite is not None
    assert client_suite[0] == server_suite[0]
    return server_suite[0]


def _client(ca: LocalCA, version: ssl.TLSVersion) -> ssl.SSLContext:
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.minimum_version = client.maximum_version = version
    return client


def test_tls13_takes_aes128_over_the_clients_sha384_first(
    ca: LocalCA, listener: ssl.SSLContext
) -> None:
    client = _client(ca, ssl.TLSVersion.TLSv1_3)
    assert client.get_ciphers()[0]["name"] == "TLS_AES_256_GCM_SHA384"  # OpenSSL's client order
    assert _negotiated(listener, client) == "TLS_AES_128_GCM_SHA256"


def test_a_client_that_lists_chacha20_first_gets_it(ca: LocalCA, listener: ssl.SSLContext) -> None:
    """A client without AES instructions says so by its order; the server follows it."""
    client = _client(ca, ssl.TLSVersion.TLSv1_3)
    assert set_tls13_suites(client, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256")
    assert _negotiated(listener, client) == "TLS_CHACHA20_POLY1305_SHA256"


def test_a_client_with_only_aes256_still_connects(ca: LocalCA, listener: ssl.SSLContext) -> None:
    client = _client(ca, ssl.TLSVersion.TLSv1_3)
    assert set_tls13_suites(client, "TLS_AES_256_GCM_SHA384")
    assert _negotiated(listener, client) == "TLS_AES_256_GCM_SHA384"


def test_tls12_takes_ecdhe_aes128_gcm(ca: LocalCA, listener: ssl.SSLContext) -> None:
    client = _client(ca, ssl.TLSVersion.TLSv1_2)
    assert _negotiated(listener, client) == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_the_listed_order_is_the_contexts_order() -> None:
    names = [c["name"] for c in server_context().get_ciphers()]
    assert names[:3] == [
        "TLS_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_256_GCM_SHA384",
    ]
    assert names[3] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_an_unknown_suite_is_refused_and_nothing_changes() -> None:
    ctx = server_context()
    before = [c["name"] for c in ctx.get_ciphers()]
    assert not set_tls13_suites(ctx, "TLS_NOT_A_SUITE")
    assert [c["name"] for c in ctx.get_ciphers()] == before
