"""Dashboard sessions, CSRF tokens and the login rate limit. Pure: the clock is an argument.

* :class:`Sessions`: in memory only (a daemon restart logs everyone out).
  A session is a random 256-bit token in an ``HttpOnly`` cookie plus its own
  CSRF token; it ends ``ttl_s`` after login or ``idle_s`` after its last use,
  whichever comes first, or at logout. The table is keyed by the SHA-256 of
  the token, so neither a dict lookup nor a memory dump of the keys gives a
  usable cookie. At most ``max_sessions`` live at once (the oldest goes).
* :class:`LoginLimiter`: login attempts per client key (address; IPv6 /64),
  reserved before the first await of the login handler; after a few, an
  exponential backoff per client (no global cap: it would let anyone lock the
  admin out). While a client is limited every attempt is refused *without*
  checking the password, so the limit bounds guesses, not just wrong answers.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

__all__ = ["LoginLimiter", "Session", "Sessions", "password_matches"]

TOKEN_BYTES: Final = 32


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def password_matches(given: str, expected: str) -> bool:
    """Constant time over equal-length digests, whatever the lengths of the inputs."""
    return hmac.compare_digest(_digest(given), _digest(expected))


@dataclass(slots=True)
class Session:
    token: str  # the cookie value
    csrf: str  # the X-CSRF-Token every unsafe request must carry
    client: str
    created_at: float
    last_seen: float

    def csrf_matches(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(_digest(presented), _digest(self.csrf))


@dataclass(slots=True)
class Sessions:
    ttl_s: float
    idle_s: float
    max_sessions: int = 1000
    _by_digest: OrderedDict[bytes, Session] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self, client: str, now: float) -> Session:
        self.sweep(now)
        while len(self._by_digest) >= self.max_sessions:
            self._by_digest.popitem(last=False)  # the oldest login goes first
        session = Session(
            token=secrets.token_urlsafe(TOKEN_BYTES),
            csrf=secrets.token_urlsafe(TOKEN_BYTES),
            client=client,
            created_at=now,
            last_seen=now,
        )
        self._by_digest[_digest(session.token)] = session
        return session

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session for ``token`` (its last use moves to ``now``), else None."""
        if not token:
            return None
        key = _digest(token)
        session = self._by_digest.get(key)
        if session is None:
            return None
        if self._expired(session, now):
            del self._by_digest[key]
            return None
        session.last_seen = now
        return session

    def revoke(self, token: str | None) -> bool:
        if not token:
            return False
        return self._by_digest.pop(_digest(token), None) is not None

    def revoke_all(self) -> int:
        count = len(self._by_digest)
        self._by_digest.clear()
        return count

    def expires_at(self, session: Session) -> float:
        return min(session.created_at + self.ttl_s, session.last_seen + self.idle_s)

    def sweep(self, now: float) -> None:
        for key in [k for k, s in self._by_digest.items() if self._expired(s, now)]:
            del self._by_digest[key]

    def _expired(self, session: Session, now: float) -> bool:
        return now >= self.expires_at(session)


@dataclass(slots=True)
class _Attempts:
    count: int
    last_at: float


@dataclass(slots=True)
class LoginLimiter:
    """Per client: ``per_client`` attempts free, then an exponential backoff.

    An attempt is *reserved* (:meth:`reserve`) before the password is read or
    checked, so concurrent attempts cannot all slip past the check; a correct
    password clears the client (:meth:`succeeded`). After ``per_client``
    unsuccessful attempts the client waits ``first_delay_s``, and each further
    failure doubles the wait, up to ``max_delay_s``. A client is forgotten
    ``forget_s`` after its last attempt. There is no cap over all clients: it
    would let anyone lock the admin out by failing from elsewhere.
    """

    per_client: int = 5
    first_delay_s: float = 60.0
    max_delay_s: float = 900.0
    forget_s: float = 3600.0
    max_clients: int = 10_000
    _failures: OrderedDict[str, _Attempts] = field(default_factory=OrderedDict)

    def retry_after(self, client: str, now: float) -> int | None:
        """Whole seconds until ``client`` may try again (>= 1), or None when it may now."""
        self._forget(now)
        mine = self._failures.get(client)
        if mine is None or mine.count < self.per_client:
            return None
        wait = mine.last_at + self.delay(mine.count) - now
        return max(1, math.ceil(wait)) if wait > 0 else None

    def delay(self, count: int) -> float:
        """The wait after ``count`` unsuccessful attempts (0 while some are free)."""
        if count < self.per_client:
            return 0.0
        doublings = min(count - self.per_client, 30)
        return float(min(self.max_delay_s, self.first_delay_s * 2**doublings))

    def reserve(self, client: str, now: float) -> int | None:
        """Count an attempt now, or the seconds to wait (nothing counted) when limited."""
        wait = self.retry_after(client, now)
        if wait is not None:
            return wait
        mine = self._failures.pop(client, None) or _Attempts(0, now)
        mine.count += 1
        mine.last_at = now
        self._failures[client] = mine  # most recent last
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        return None

    def succeeded(self, client: str) -> None:
        """A correct password clears that client's attempts."""
        self._failures.pop(client, None)

    def _forget(self, now: float) -> None:
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if now - oldest.last_at < self.forget_s:
                break
            self._failures.popitem(last=False)
