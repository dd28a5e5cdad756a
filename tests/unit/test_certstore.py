"""Certificate files, the SNI choice and the local CA, on a real filesystem and real TLS."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509

from patrd.tls.certstore import CertStore, CertStoreError, generate_key, server_context
from patrd.tls.localca import LocalCA, permitted_names
from patrd.tls.resolve import _question, is_local, parse_answer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    ca = LocalCA(tmp_path / "ca", ("example.com", "test"))
    ca.ensure()
    return ca


def pair(ca: LocalCA, name: str) -> tuple[bytes, bytes]:
    key = generate_key()
    return key, ca.issue(name, key)


def test_write_is_0600_and_loads_back(tmp_path: Path, ca: LocalCA) -> None:
    store = CertStore(tmp_path / "certs")
    info, ctx = store.write("a.example.com", *pair(ca, "a.example.com"))
    store.install(info, ctx)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.cert_path.stat().st_mode) == 0o644
    assert info.names == ("a.example.com",) and info.issuer == ca.issuer
    assert info.not_after - info.not_before > 89 * 86400
    again = CertStore(tmp_path / "certs")
    assert [i.serial for i in again.load_all()] == [info.serial]
    assert list((tmp_path / "certs").iterdir()) == [info.path]


def test_a_mismatched_pair_is_refused_and_the_old_one_stays(tmp_path: Path, ca: LocalCA) -> None:
    store = CertStore(tmp_path / "certs")
    info, _ = store.write("a.example.com", *pair(ca, "a.example.com"))
    _, chain = pair(ca, "a.example.com")
    with pytest.raises(CertStoreError, match="do not load"):
        store.write("a.example.com", generate_key(), chain)
    assert [i.serial for i in CertStore(tmp_path / "certs").load_all()] == [info.serial]
    with pytest.raises(CertStoreError):
        store.path_for("../etc")


def test_a_crash_after_the_temp_file_leaves_the_old_pair(tmp_path: Path, ca: LocalCA) -> None:
    """The daemon is killed (SIGKILL) between writing the new pair and renaming it."""
    store = CertStore(tmp_path / "certs")
    old, _ = store.write("a.example.com", *pair(ca, "a.example.com"))
    key, chain = pair(ca, "a.example.com")
    (tmp_path / "new.key").write_bytes(key)
    (tmp_path / "new.chain").write_bytes(chain)
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from patrd.tls import certstore
        def die(src, dst):
            os.kill(os.getpid(), signal.SIGKILL)  # the temp file is written and fsynced
        certstore.os.replace = die
        store = certstore.CertStore(Path({str(tmp_path / "certs")!r}))
        store.write("a.example.com", Path({str(tmp_path / "new.key")!r}).read_bytes(),
                    Path({str(tmp_path / "new.chain")!r}).read_bytes())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert proc.returncode == -9
    leftovers = [p.name for p in (tmp_path / "certs").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the interrupted write
    fresh = CertStore(tmp_path / "certs")
    loaded = fresh.load_all()
    assert [i.serial for i in loaded] == [old.serial]  # the old pair, usable
    assert [p.name for p in (tmp_path / "certs").iterdir()] == ["a.example.com.pem"]


async def test_sni_picks_the_certificate_per_handshake(tmp_path: Path, ca: LocalCA) -> None:
    store = CertStore(tmp_path / "certs")
    for name in ("a.example.com", "*.wild.example.com"):
        store.install(*store.write(name, *pair(ca, name)))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=store.listener_context())
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(ca.cert_path))

    async def served(name: str) -> int:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=name
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    try:
        first = await served("a.example.com")
        assert first == store.get("a.example.com").serial  # type: ignore[union-attr]
        # A renewal is installed: the next handshake sees it, no restart.
        store.install(*store.write("a.example.com", *pair(ca, "a.example.com")))
        assert await served("a.example.com") != first
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await served("unknown.example.com")  # no certificate: the handshake fails
    finally:
        server.close()
        await server.wait_closed()


def test_server_context_is_tls12_or_newer() -> None:
    ctx = server_context()
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    names = {c["name"] for c in ctx.get_ciphers()}
    assert not any("CBC" in n or "RC4" in n or "NULL" in n for n in names), names


def test_local_ca_survives_a_restart(tmp_path: Path, ca: LocalCA) -> None:
    again = LocalCA(tmp_path / "ca", ("test", "example.com"))
    assert again.issuer == ca.issuer
    assert sorted(os.listdir(tmp_path / "ca")) == ["ca.key", "ca.pem"]


def test_dns_answers_are_parsed() -> None:
    query = _question("a.example.com", 1, 0x1234)
    # A response: the question echoed, one A answer (name as a pointer to offset 12).
    answer = (
        b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
        + query[12:]
        + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01"
    )
    assert parse_answer(answer, 1) == {"127.0.0.1"}
    nxdomain = b"\x12\x34\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:]
    assert parse_answer(nxdomain, 1) == set()
    assert is_local("127.0.0.1") and not is_local("192.0.2.10") and not is_local("nope")


def test_the_account_key_is_made_once_even_by_concurrent_orders(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from patrd.tls.acme_client import AcmeClient, AcmeOptions, ChallengeTokens

    options = AcmeOptions(directory_url="https://ca.invalid/dir", state_dir=tmp_path / "acme")
    client = AcmeClient(options, ChallengeTokens())
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: client._account_key(), range(8)))
        list(pool.map(lambda _: client._remember("https://ca.invalid/acct/1"), range(8)))
    assert all(k is keys[0] for k in keys)
    files = sorted(p.name for p in client.account_dir.iterdir())
    assert files == ["account.json", "account.key"]
    assert stat.S_IMODE((client.account_dir / "account.key").stat().st_mode) == 0o600
    again = AcmeClient(options, ChallengeTokens())._account_key()
    assert again.thumbprint() == keys[0].thumbprint()  # kept across restarts


def test_retry_after_header_values() -> None:
    import email.utils
    import time as _time

    from patrd.tls.acme_client import _retry_after

    assert _retry_after("120") == 120.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = email.utils.formatdate(_time.time() + 600, usegmt=True)
    assert 590 <= (_retry_after(later) or 0) <= 600


# --- the local CA is constrained (trust boundaries) ----------------------------


def test_local_ca_is_name_constrained_short_lived_and_private(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "lc", permitted_names("apps.example.net", ["extra.test"]))
    ca.ensure()
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert sorted(str(g.value) for g in ext.value.permitted_subtrees or []) == [
        "apps.example.net",
        "extra.test",
        "localhost",
    ]
    excluded = {str(g.value) for g in ext.value.excluded_subtrees or []}
    assert excluded == {"0.0.0.0/0", "::/0"}
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=5 * 365, minutes=10)
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    # inside: signed; outside: refused with the config key to widen it
    for name in ("apps.example.net", "a.apps.example.net", "x.localhost", "extra.test"):
        ca.issue(name, generate_key())
    for name in ("example.net", "evilapps.example.net", "bank.example.com", "localhost.evil"):
        with pytest.raises(CertStoreError, match=r"tls\.local_ca_names"):
            ca.issue(name, generate_key())


def test_leaf_outside_the_constraints_fails_verification(tmp_path: Path) -> None:
    """Even a leaf the key signs outside the constraints is refused by OpenSSL clients."""
    ca = LocalCA(tmp_path / "lc", ["ok.test"])
    ca.ensure()
    outside = LocalCA(tmp_path / "lc", ["ok.test", "bank.example"])  # same files, wider names
    outside._key, outside._cert = ca._key, ca._cert
    chain = outside.issue("bank.example", generate_key())
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n")
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.cert_path), str(leaf)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode != 0 and "subtree violation" in verify.stdout + verify.stderr
    good = tmp_path / "good.pem"
    chain = ca.issue("www.ok.test", generate_key())
    good.write_bytes(chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n")
    ok = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.cert_path), str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_an_unconstrained_or_other_ca_is_replaced(tmp_path: Path) -> None:
    old = LocalCA(tmp_path / "lc", ["one.test"])
    old.ensure()
    again = LocalCA(tmp_path / "lc", ["one.test"])
    assert again.issuer == old.issuer  # same names: kept
    wider = LocalCA(tmp_path / "lc", ["one.test", "two.test"])
    assert wider.issuer != old.issuer  # other names: a new CA, the old pair kept aside
    assert sorted(os.listdir(tmp_path / "lc")) == ["ca.key", "ca.key.old", "ca.pem", "ca.pem.old"]
    assert stat.S_IMODE((tmp_path / "lc" / "ca.key.old").stat().st_mode) == 0o600


def test_local_ca_names_config(tmp_path: Path) -> None:
    from patrd.model.errors import ConfigError
    from patrd.settings import config as config_mod

    parsed = config_mod.parse({"tls": {"local_ca_names": ["Intra.Example."]}}, base_dir=tmp_path)
    assert parsed.tls.local_ca_names == ("intra.example",)
    assert permitted_names(parsed.proxy.base_domain, parsed.tls.local_ca_names) == (
        "intra.example",
        "localhost",
    )
    with pytest.raises(ConfigError) as info:
        config_mod.parse({"tls": {"local_ca_names": ["ok.test", "not a name"]}}, base_dir=tmp_path)
    assert info.value.key == "tls.local_ca_names[1]"
