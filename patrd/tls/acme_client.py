"""ACME (RFC 8555) issuance with the ``acme`` package: blocking, run it in a thread.

One call of :meth:`AcmeClient.issue` is one order for one hostname:
directory → account (created once; its key is kept in
``<data_dir>/tls/acme/<directory hash>/account.key``, 0600) → new order →
HTTP-01 answers published on the :class:`ChallengeBoard` (the proxy serves
them on port 80) → poll → finalize → the chain.

Every ACME request step is retried here on ``badNonce`` (the package retries
once; a second rejection happens ≈1 in 150 issuances at Pebble's default
noise) and once on a dropped connection. Anything else leaves as
:class:`AcmeFailure`, with the CA's ``Retry-After`` when it sent one
(``rateLimited``): the controller turns failures into per-name backoff.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import requests
from acme import challenges, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwa import RS256
from josepy.jwk import JWKRSA

from patrd import __version__
from patrd.tls.certstore import atomic_write, make_csr

T = TypeVar("T")

NONCE_RETRIES = 4
POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
DEFAULT_ARI_RETRY_S = 6 * 3600.0
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


class ChallengeBoard(Protocol):
    """Where HTTP-01 key authorizations are published (the proxy's token map)."""

    def publish(self, token: str, key_authorization: str) -> None: ...

    def withdraw(self, token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AcmeOptions:
    directory_url: str
    state_dir: Path  # <data_dir>/tls/acme
    ca_bundle: Path | None = None  # trust for the directory's TLS (else the system's)
    contact_email: str = ""
    timeout_s: float = 90.0  # one order, from new-order to the chain
    network_timeout_s: int = 30


class AcmeFailure(Exception):
    """One issuance failed; ``retry_after`` (seconds) when the CA asked for a pause."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class _Hints:
    """What the requests hook saw on the last response (Retry-After)."""

    retry_after: float | None = None


class AcmeClient:
    def __init__(self, options: AcmeOptions, board: ChallengeBoard) -> None:
        self.options = options
        self._board = board
        digest = hashlib.sha256(options.directory_url.encode()).hexdigest()[:16]
        self.account_dir = options.state_dir / digest
        self._key: JWKRSA | None = None
        self._account_lock = threading.Lock()  # orders run in several threads at once

    # --- public (blocking) -----------------------------------------------------

    def issue(self, name: str, key_pem: bytes, on_order: Callable[[], None]) -> bytes:
        """Order a certificate for ``name`` with ``key_pem``; the chain as PEM.

        ``on_order`` is called once the CA has accepted the order (it counts
        against the CA's limits from then on).
        """
        hints = _Hints()
        try:
            return self._issue(name, key_pem, on_order, hints)
        except AcmeFailure:
            raise
        except messages.Error as exc:
            retry = hints.retry_after if exc.code == "rateLimited" else None
            raise AcmeFailure(f"CA refused: {_problem(exc)}", retry_after=retry) from None
        except errors.ValidationError as exc:
            raise AcmeFailure(f"validation failed: {_failed_authzs(exc)}") from None
        except errors.TimeoutError:
            raise AcmeFailure("CA did not finish the order in time") from None
        except requests.RequestException as exc:
            raise AcmeFailure(f"cannot reach the CA: {_network_reason(exc)}") from None
        except errors.Error as exc:
            raise AcmeFailure(f"ACME error: {type(exc).__name__}: {exc}") from None

    def renewal_window(self, cert_pem: bytes) -> tuple[float, float, float] | None:
        """ARI (RFC 9773): ``(start, end, retry_after_s)``, or None if the CA has none."""
        hints = _Hints()
        try:
            net = self._network(hints, with_key=False)
            directory = self._retry(lambda: ClientV2.get_directory(self.options.directory_url, net))
            try:
                base = directory["renewalInfo"]
            except KeyError:
                return None
            cert = x509.load_pem_x509_certificate(cert_pem)
            response = self._retry(
                lambda: net.get(f"{base}/{ari_cert_id(cert)}", content_type="application/json")
            )
            info = messages.RenewalInfo.from_json(response.json())
        except (errors.Error, messages.Error, requests.RequestException, ValueError) as exc:
            raise AcmeFailure(f"renewal info unavailable: {exc}") from None
        window = info.suggested_window
        retry = _retry_after(response.headers.get("Retry-After")) or DEFAULT_ARI_RETRY_S
        return window.start.timestamp(), window.end.timestamp(), retry

    # --- the order ---------------------------------------------------------------

    def _issue(
        self, name: str, key_pem: bytes, on_order: Callable[[], None], hints: _Hints
    ) -> bytes:
        net = self._network(hints, with_key=True)
        directory = self._retry(lambda: ClientV2.get_directory(self.options.directory_url, net))
        client = ClientV2(directory, net)
        self._register(client, net)
        csr = make_csr(key_pem, [name])
        order = self._retry(lambda: client.new_order(csr))
        on_order()
        deadline = time.monotonic() + self.options.timeout_s
        published: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # reused by the CA: nothing to prove
                challb = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)),
                    None,
                )
                if challb is None:
                    raise AcmeFailure(f"the CA offers no http-01 challenge for {name}")
                response, validation = challb.response_and_validation(net.key)
                token = challb.chall.encode("token")
                self._board.publish(token, validation)
                published.append(token)
                self._answer(client, challb, response)
            self._poll_authorizations(client, order, deadline)
            try:
                self._retry(lambda: client.begin_finalization(order))
            except messages.Error as exc:
                if exc.code != "orderNotReady":
                    raise
            wall_deadline = datetime.datetime.now() + datetime.timedelta(
                seconds=max(1.0, deadline - time.monotonic())
            )
            done = self._retry(lambda: client.poll_finalization(order, wall_deadline))
        finally:
            for token in published:
                self._board.withdraw(token)
        if not done.fullchain_pem:
            raise AcmeFailure("the CA returned no certificate")
        return done.fullchain_pem.encode()

    def _poll_authorizations(
        self, client: ClientV2, order: messages.OrderResource, deadline: float
    ) -> None:
        """Faster than the package's fixed 1 s sleeps: 0.2 s, doubling to 1 s."""
        for authzr in order.authorizations:
            delay = POLL_FIRST_S
            current = authzr
            while current.body.status != messages.STATUS_VALID:
                status = current.body.status
                if status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                    raise AcmeFailure(f"validation failed: {_authz_error(current)}")
                if time.monotonic() > deadline:
                    raise AcmeFailure("authorization still pending at the deadline")
                time.sleep(delay)
                delay = min(POLL_MAX_S, delay * 2)
                current = self._poll(client, current)

    def _answer(
        self,
        client: ClientV2,
        challb: messages.ChallengeBody,
        response: challenges.ChallengeResponse,
    ) -> None:
        self._retry(lambda: client.answer_challenge(challb, response))

    def _poll(
        self, client: ClientV2, authzr: messages.AuthorizationResource
    ) -> messages.AuthorizationResource:
        return self._retry(lambda: client.poll(authzr))[0]

    def _register(self, client: ClientV2, net: ClientNetwork) -> None:
        """Idempotent: with a known key the CA answers with the existing account."""
        email = self.options.contact_email or None
        new = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        try:
            regr = self._retry(lambda: client.new_account(new))
        except errors.ConflictError as exc:
            regr = messages.RegistrationResource(body=messages.Registration(), uri=exc.location)
            net.account = regr
        self._remember(regr.uri)

    # --- plumbing ----------------------------------------------------------------

    def _network(self, hints: _Hints, *, with_key: bool) -> ClientNetwork:
        verify: bool | str = str(self.options.ca_bundle) if self.options.ca_bundle else True
        net = ClientNetwork(
            self._account_key() if with_key else None,
            alg=RS256,
            verify_ssl=cast(bool, verify),  # requests takes a CA bundle path too
            user_agent=f"patrd/{__version__}",
            timeout=self.options.network_timeout_s,
        )

        def record(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            hints.retry_after = _retry_after(response.headers.get("Retry-After"))

        net.session.hooks["response"].append(record)
        return net

    def _account_key(self) -> JWKRSA:
        with self._account_lock:
            if self._key is None:
                self._key = self._load_or_create_key()
            return self._key

    def _load_or_create_key(self) -> JWKRSA:
        path = self.account_dir / "account.key"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
        else:
            self.account_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            atomic_write(path, pem, 0o600)
        return JWKRSA(key=key)

    def _remember(self, uri: str | None) -> None:
        path = self.account_dir / "account.json"
        data = {"directory": self.options.directory_url, "uri": uri}
        with self._account_lock:
            try:
                if path.exists() and json.loads(path.read_text()) == data:
                    return
            except ValueError:
                pass
            atomic_write(path, json.dumps(data).encode(), 0o600)

    def _retry(self, step: Callable[[], T]) -> T:
        dropped = False
        for attempt in range(NONCE_RETRIES):
            try:
                return step()
            except messages.Error as exc:
                if exc.code != "badNonce" or attempt == NONCE_RETRIES - 1:
                    raise
            except (requests.ConnectionError, requests.Timeout):
                if dropped:
                    raise
                dropped = True
                time.sleep(0.5)
        raise AssertionError("unreachable")


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial, DER INTEGER)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    key_id = aki.key_identifier or b""
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)
    return f"{_b64(key_id)}.{_b64(serial_bytes)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


def _problem(exc: messages.Error) -> str:
    return f"{exc.code or exc.typ}: {exc.detail or ''}".strip()


def _authz_error(authzr: messages.AuthorizationResource) -> str:
    ident = authzr.body.identifier.value
    for challb in authzr.body.challenges:
        if challb.error is not None:
            return f"{ident}: {_problem(challb.error)}"
    return f"{ident}: authorization {authzr.body.status}"


def _failed_authzs(exc: errors.ValidationError) -> str:
    return "; ".join(_authz_error(a) for a in exc.failed_authzrs)


def _network_reason(exc: requests.RequestException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "…"


class ChallengeTokens:
    """The HTTP-01 token map the proxy answers from (token → key authorization).

    Written from the ACME worker thread, read by the proxy on the event loop:
    single dict operations, atomic under the GIL. Key authorizations are
    public by design (anyone may fetch them over HTTP); they are not secrets.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, bytes] = {}
        # Called after each change, in the changing thread; publish() returns
        # once they return (the proxy's worker processes have the token then).
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def publish(self, token: str, key_authorization: str) -> None:
        self.tokens[token] = key_authorization.encode("ascii")
        for listener in self._listeners:
            listener()

    def withdraw(self, token: str) -> None:
        self.tokens.pop(token, None)
        for listener in self._listeners:
            listener()
