"""The local CA: HTTPS out of the box when ACME is off (local runs, no public DNS).

Created once in ``<data_dir>/tls/local-ca/`` (``ca.pem``, world-readable, to
hand to ``curl --cacert``; ``ca.key``, 0600). It signs one certificate per
hostname, like the ACME path does, and these are stored, renewed and served
the same way. Its name carries a random suffix, so two installations never
issue under the same CA name.
"""

from __future__ import annotations

import datetime
import secrets
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from patrd.tls.certstore import atomic_write, generate_key

CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 90
_BACKDATE = datetime.timedelta(minutes=5)  # clocks of clients a little behind


class LocalCA:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca.key"
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: x509.Certificate | None = None

    @property
    def issuer(self) -> str:
        """The RFC 4514 name leaf certificates of this CA carry as issuer."""
        self.ensure()
        assert self._cert is not None
        return self._cert.subject.rfc4514_string()

    def ensure(self) -> None:
        """Load the CA, creating it on first use (blocking: call from a thread)."""
        if self._cert is not None:
            return
        if self.cert_path.exists() and self.key_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._key = key
            self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.chmod(0o755)  # ca.pem is for everyone; ca.key stays 0600
        key_pem = generate_key()
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        host = socket.gethostname()[:30] or "localhost"
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "patrd"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"patrd local CA {host} {secrets.token_hex(4)}"
                ),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        # The key first: a crash between the two writes leaves no usable CA
        # certificate, so the next start makes a fresh pair.
        atomic_write(self.key_path, key_pem, 0o600)
        atomic_write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._key, self._cert = key, cert

    def issue(self, name: str, key_pem: bytes, validity_days: int = LEAF_VALIDITY_DAYS) -> bytes:
        """A leaf certificate for ``name`` and ``key_pem``: the chain (leaf + CA), PEM."""
        self.ensure()
        assert self._key is not None and self._cert is not None
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        now = datetime.datetime.now(datetime.UTC)
        cn = [x509.NameAttribute(NameOID.COMMON_NAME, name)] if len(name) <= 64 else []
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(cn))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=validity_days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self._cert.public_bytes(
            serialization.Encoding.PEM
        )
