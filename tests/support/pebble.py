"""Debian's Pebble (ACME test CA) and pebble-challtestsrv (its DNS), on loopback.

The tests start and stop them: :class:`Pebble` writes a TLS certificate for
Pebble's own listener (a throwaway CA + leaf for 127.0.0.1/localhost, made
with ``cryptography``), a config whose ``httpPort`` is patrd's HTTP proxy
port (HTTP-01 validation connects there), and runs ``pebble`` against a
``pebble-challtestsrv`` that answers every A query with 127.0.0.1 and no
AAAA (so validation never dials ::1). patrd trusts the directory through
``ca_bundle``; clients trust patrd's certificates through :meth:`roots`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.daemon import free_port
from tests.support.waits import until_sync


def _write_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem) for Pebble's own HTTPS listener."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "patrd test: pebble listener CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(paths[2], 0o600)
    return paths


@dataclass
class Pebble:
    workdir: Path
    http_port: int  # patrd's plain-HTTP proxy port: where HTTP-01 is validated
    validity_s: int | None = None  # certificateValidityPeriod (default: Pebble's 5 years)
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    dns_management_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    dns: subprocess.Popen[bytes] | None = None
    ca: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.ca_bundle, self._cert, self._key = _write_tls(self.workdir / "pebble-tls")

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def patrd_config(self) -> dict[str, dict[str, object]]:
        """The [acme] section a test daemon needs to use this Pebble."""
        return {
            "acme": {
                "enabled": True,
                "directory_url": self.directory_url,
                "ca_bundle": str(self.ca_bundle),
                "contact_email": "ops@patrd.test",
                "resolver": self.resolver,
            }
        }

    def start(self) -> None:
        """Start the DNS server (if it is not running) and the CA."""
        assert self.ca is None, "already running"
        self.starts += 1
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self._cert),
                "privateKey": str(self._key),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                **(
                    {"certificateValidityPeriod": self.validity_s}
                    if self.validity_s is not None
                    else {}
                ),
            }
        }
        path = self.workdir / "pebble.json"
        path.write_text(json.dumps(config))
        log = (self.workdir / "pebble.log").open("ab")
        if self.dns is None:
            self.dns = subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv6",
                    "",
                    "-dns01",
                    f"127.0.0.1:{self.dns_port}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-management",
                    f"127.0.0.1:{self.dns_management_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.ca = subprocess.Popen(
            ["pebble", "-config", str(path), "-dnsserver", self.resolver],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PEBBLE_VA_NOSLEEP": "1"},
        )
        log.close()

        def answering() -> bool:
            for proc in (self.dns, self.ca):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"pebble exited {proc.returncode}:\n{self.log_tail()}")
            try:
                self._get(f"https://127.0.0.1:{self.port}/dir")
                self._dns_ready()
            except OSError:
                return False
            return True

        until_sync(answering, 20, "pebble answering", interval=0.05, detail=self.log_tail)

    def stop_ca(self) -> None:
        """Stop the CA only (its DNS server keeps answering)."""
        _terminate(self.ca)
        self.ca = None

    def stop(self) -> None:
        self.stop_ca()
        _terminate(self.dns)
        self.dns = None

    def roots(self) -> bytes:
        """Pebble's issuing root (new at every start): what clients of patrd trust."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.roots().decode())

    def set_address(self, host: str, address: str) -> None:
        """Make challtestsrv answer ``host`` with ``address`` (e.g. a TEST-NET one)."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": [address]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dns_management_port}/add-a", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "pebble.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(url, context=ctx, timeout=5) as response:
            return bytes(response.read())

    def _dns_ready(self) -> None:
        from patrd.tls.resolve import query

        if not query("ready.patrd.test", 1, ("127.0.0.1", self.dns_port)):
            raise OSError("challtestsrv not answering yet")


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
