"""The local CA is constrained: a real daemon, real TLS handshakes against its ca.pem."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.support.daemon import Api, Daemon
from tests.support.waits import issued_certificate, until


async def handshake(port: int, name: str, ca: Path) -> str:
    """ "ok" or the verification error of a TLS handshake with SNI ``name``."""
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name), 5
        )
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    writer.close()
    return "ok"


async def issued(api: Api, domain: str, not_serial: str = "", timeout: float = 30) -> Any:
    return await until(
        lambda: issued_certificate(api, domain, not_serial),
        timeout,
        f"a certificate for {domain}",
        interval=0.2,
    )


async def test_local_ca_is_constrained_and_replaced_when_its_names_change(
    tmp_path: Path,
) -> None:
    d = Daemon(tmp_path)
    ca_pem = d.data_dir / "tls" / "local-ca" / "ca.pem"
    inside = "www.test.localhost"  # under base_domain
    outside = "shop.example.org"  # neither base_domain, localhost nor an extra
    d.start()
    try:
        async with Api(d) as api:
            for domain in (inside, outside):
                await api.ok(
                    "POST",
                    "/v1/urls",
                    {"domain": domain, "target": {"redirect": "https://a.example/"}},
                )
            first = await issued(api, inside)
            assert await handshake(d.https_port, inside, ca_pem) == "ok"
            certs = (await api.ok("GET", "/v1/certificates"))["certificates"]
            [refused] = [c for c in certs if c["domain"] == outside]
            assert refused["status"] != "issued", refused
        cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
        assert ext.critical
        permitted = sorted(str(g.value) for g in ext.value.permitted_subtrees or [])
        assert permitted == ["localhost", "test.localhost"]
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 5 * 365
        assert oct((ca_pem.parent / "ca.key").stat().st_mode & 0o777) == "0o600"

        # the operator adds a name: a new CA; the served certificate is reissued
        # under it now (not at renewal), and the new name gets one too
        d.stop()
        d.config = {"tls": {"local_ca_names": ["example.org"]}}
        d.start()
        async with Api(d) as api:
            await issued(api, inside, not_serial=first["serial"])
            await issued(api, outside)
        assert (ca_pem.parent / "ca.pem.old").exists()

        async def trusted() -> bool:
            return await handshake(d.https_port, inside, ca_pem) == "ok"

        await until(trusted, 20, f"{inside} served under the new CA", d, interval=0.2)
        assert await handshake(d.https_port, outside, ca_pem) == "ok"
        old = await handshake(d.https_port, inside, ca_pem.parent / "ca.pem.old")
        assert old != "ok", "the old CA no longer vouches for anything served"
    finally:
        d.stop()
