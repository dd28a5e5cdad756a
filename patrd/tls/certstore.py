"""Certificates on disk and in memory, and the SNI callback that picks one.

On disk, one file per hostname, ``<dir>/<name>.pem``: the private key
followed by the full chain, mode 0600. One file, not two, so that replacing
a pair is one ``rename``: a crash at any instant leaves either the old pair
or the new one, never a key that does not match its certificate. Writes go
to a temporary file in the same directory, are fsynced, renamed over the
old file, and the directory is fsynced. Leftover temporary files are
removed on load.

In memory, one ``ssl.SSLContext`` per hostname. The listener's context has
an ``sni_callback`` that swaps in the context of the name the client asked
for, so a new or renewed certificate is used by the next handshake, without
a restart and without touching open connections.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from patrd.tls.sni import SniContexts, server_context

__all__ = [
    "CertInfo",
    "CertStore",
    "CertStoreError",
    "generate_key",
    "load_pair",
    "make_csr",
    "server_context",
]

log = structlog.get_logger("patrd.tls")

TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What patrd needs to know of an installed certificate (no key material)."""

    name: str  # the hostname it is stored under
    names: tuple[str, ...]  # its DNS subject alternative names
    serial: int
    not_before: float  # unix seconds
    not_after: float
    issuer: str  # RFC 4514 string of the issuer's name
    path: Path

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before


class CertStoreError(Exception):
    pass


class CertStore:
    """Certificates by hostname: files in ``directory``, contexts in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sni = SniContexts()
        self._contexts = self._sni.contexts
        self._infos: dict[str, CertInfo] = {}
        # Called (on the event loop) after every install or remove: the proxy's
        # worker processes get the new certificate bundle (patrd/proxy/workers.py).
        self._listeners: list[Callable[[], None]] = []

    # --- reading ------------------------------------------------------------

    def get(self, name: str) -> CertInfo | None:
        return self._infos.get(name)

    def has(self, name: str) -> bool:
        """A certificate is served for ``name`` (exactly, or by a wildcard)."""
        return self._sni.has(name)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each change of the served certificates."""
        self._listeners.append(listener)

    def bundle(self) -> dict[str, tuple[Path, int]]:
        """Every served name: the file its key and chain are in, and the serial served."""
        return {name: (info.path, info.serial) for name, info in self._infos.items()}

    def infos(self) -> dict[str, CertInfo]:
        return dict(self._infos)

    def path_for(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise CertStoreError(f"bad certificate name {name!r}")
        return self.directory / f"{name}.pem"

    # --- blocking file work (call from a thread) ----------------------------

    def load_all(self) -> list[CertInfo]:
        """Read every pair in the directory; drop leftovers of interrupted writes."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        loaded: list[CertInfo] = []
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    path.unlink()
                log.info("tls.tmp_removed", file=path.name)
                continue
            if path.suffix != ".pem":
                continue
            name = path.name[: -len(".pem")]
            try:
                info, ctx = load_pair(path, name)
            except CertStoreError as exc:
                log.warning("tls.cert_unusable", name=name, error=str(exc))
                continue
            self._install(info, ctx)
            loaded.append(info)
        return loaded

    def write(self, name: str, key_pem: bytes, chain_pem: bytes) -> tuple[CertInfo, ssl.SSLContext]:
        """Write the pair atomically and return it loaded; :meth:`install` makes it live.

        The pair is checked (parsed, key matches) from the temporary file
        before it replaces anything.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.path_for(name)
        tmp = _temp_name(path)
        data = key_pem.rstrip(b"\n") + b"\n" + chain_pem.lstrip(b"\n")
        write_private(tmp, data)
        try:
            info, ctx = load_pair(tmp, name)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(self.directory)
        return _with_path(info, path), ctx

    # --- on the event loop --------------------------------------------------

    def install(self, info: CertInfo, ctx: ssl.SSLContext) -> None:
        """Serve ``ctx`` for ``info.name`` from the next handshake on."""
        self._install(info, ctx)

    def remove(self, name: str) -> None:
        self._contexts.pop(name, None)
        self._infos.pop(name, None)
        self._changed()

    def delete_file(self, name: str) -> None:
        """Delete ``name``'s key and chain (blocking: call from a thread; :meth:`remove` first)."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(name).unlink()

    def _install(self, info: CertInfo, ctx: ssl.SSLContext) -> None:
        self._contexts[info.name] = ctx  # one assignment: handshakes see old or new
        self._infos[info.name] = info
        self._changed()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def listener_context(self) -> ssl.SSLContext:
        """The context of the HTTPS listeners: it only dispatches by SNI."""
        return self._sni.listener_context()


# --- helpers ------------------------------------------------------------------


def load_pair(path: Path, name: str) -> tuple[CertInfo, ssl.SSLContext]:
    """Parse ``path`` (key + chain) into its info and a ready server context."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertStoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertStoreError(f"{path.name}: no certificate: {exc}") from None
    ctx = server_context()
    try:
        ctx.load_cert_chain(str(path))
    except ssl.SSLError as exc:
        raise CertStoreError(f"{path.name}: key and certificate do not load: {exc}") from None
    leaf = certs[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    info = CertInfo(
        name=name,
        names=names,
        serial=leaf.serial_number,
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        issuer=leaf.issuer.rfc4514_string(),
        path=path,
    )
    return info, ctx


def _with_path(info: CertInfo, path: Path) -> CertInfo:
    return CertInfo(
        info.name, info.names, info.serial, info.not_before, info.not_after, info.issuer, path
    )


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never wider, even for a moment), write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """temp + fsync + rename + fsync(dir): readers see the old file or the new one."""
    tmp = _temp_name(path)
    write_private(tmp, data)
    try:
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _temp_name(path: Path) -> Path:
    """Unique per write: two threads writing the same file never share a temp file."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_key() -> bytes:
    """A fresh ECDSA P-256 private key, PEM (PKCS#8, unencrypted: the file is 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key_pem: bytes, names: list[str]) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cn = [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else []
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(cn))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)
