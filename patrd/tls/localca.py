"""The local CA: HTTPS out of the box when ACME is off (local runs, no public DNS).

Created once in ``<data_dir>/tls/local-ca/`` (``ca.pem``, world-readable, to
hand to ``curl --cacert``; ``ca.key``, 0600). It signs one certificate per
hostname, like the ACME path does, and these are stored, renewed and served
the same way. Its name carries a random suffix, so two installations never
issue under the same CA name.

Trusting it must not mean trusting it for the whole web: the CA carries
critical name constraints (DNS names under ``proxy.base_domain``,
``localhost`` and ``tls.local_ca_names``; no IP addresses) and lives at most
five years. A CA made before, or for other names, is replaced on load (the
old pair is kept as ``*.old``; leaf certificates are reissued, their issuer
having changed).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from patrd.tls.certstore import CertStoreError, atomic_write, generate_key

LOCAL_CA_CN_PREFIX = "CN=patrd local CA "  # how its RFC 4514 subject starts
CA_VALIDITY_DAYS = 5 * 365  # at most five years
LEAF_VALIDITY_DAYS = 90
_BACKDATE = datetime.timedelta(minutes=5)  # clocks of clients a little behind


def permitted_names(base_domain: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The DNS subtrees the CA may sign for: sorted, deduplicated, lower case."""
    names = {n.strip().rstrip(".").lower() for n in (base_domain, "localhost", *extra)}
    return tuple(sorted(n for n in names if n))


def within(name: str, permitted: Sequence[str]) -> bool:
    """RFC 5280 dNSName constraint: ``name`` is a subtree's name or below it."""
    name = name.rstrip(".").lower()
    return any(name == p or name.endswith("." + p) for p in permitted)


def constraints_of(cert: x509.Certificate) -> tuple[str, ...] | None:
    """The permitted DNS subtrees of a CA certificate; None without name constraints."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
    subtrees = ext.value.permitted_subtrees or []
    return tuple(sorted(str(g.value) for g in subtrees if isinstance(g, x509.DNSName)))


class LocalCA:
    def __init__(self, directory: Path, names: Sequence[str] = ("localhost",)) -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca.key"
        self.names = permitted_names("localhost", names)
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: x509.Certificate | None = None
        self._log = structlog.get_logger("patrd.tls")

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
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            problem = self._unfit(cert)
            if problem is None:
                self.key_path.chmod(0o600)
                self._key, self._cert = key, cert
                return
            self._log.warning("tls.local_ca_replaced", reason=problem, old=str(self.cert_path))
            for path in (self.cert_path, self.key_path):
                path.replace(path.with_name(path.name + ".old"))
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
            .add_extension(
                x509.NameConstraints(
                    permitted_subtrees=[x509.DNSName(n) for n in self.names],
                    excluded_subtrees=[
                        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                        x509.IPAddress(ipaddress.ip_network("::/0")),
                    ],
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        # The key first: a crash between the two writes leaves no usable CA
        # certificate, so the next start makes a fresh pair.
        atomic_write(self.key_path, key_pem, 0o600)
        atomic_write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._key, self._cert = key, cert

    def _unfit(self, cert: x509.Certificate) -> str | None:
        """Why an existing CA certificate must be replaced; None if it is fine."""
        constraints = constraints_of(cert)
        if constraints is None:
            return "no name constraints"
        if constraints != self.names:
            return f"constrained to {', '.join(constraints)}, not {', '.join(self.names)}"
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        if lifetime > datetime.timedelta(days=CA_VALIDITY_DAYS) + 2 * _BACKDATE:
            return f"valid for {lifetime.days} days, more than {CA_VALIDITY_DAYS}"
        return None

    def issue(self, name: str, key_pem: bytes, validity_days: int = LEAF_VALIDITY_DAYS) -> bytes:
        """A leaf certificate for ``name`` and ``key_pem``: the chain (leaf + CA), PEM."""
        if not within(name, self.names):
            raise CertStoreError(
                f"{name} is outside the local CA's name constraints ({', '.join(self.names)}); "
                "add it to tls.local_ca_names, or enable ACME"
            )
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
