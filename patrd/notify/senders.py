"""Sending one notification to one target: the only I/O of notifications.

* webhook: ``POST`` of ``Notification.payload()`` as JSON; with a secret,
  ``X-Patrd-Signature: sha256=<hex HMAC-SHA256(key, raw body)>``.
* slack: ``POST {"text": ...}`` (Slack, Mattermost, Rocket.Chat incoming webhooks).
* email: one plain-text message over SMTP (``smtplib`` in a thread), with
  STARTTLS and login when configured.

Each raises ``DeliveryError``; ``retry`` says whether trying again may help
(connection errors, timeouts, 5xx, 408, 429 — not other 4xx).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

import aiohttp

from patrd import __version__
from patrd.notify.rules import Notification
from patrd.notify.targets import Target, TargetType, url_ok

SIGNATURE_HEADER = "X-Patrd-Signature"
RETRYABLE_STATUS = frozenset({408, 425, 429})


class DeliveryError(Exception):
    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Secrets(Protocol):
    """Vault secret values by name (patrd/state/vault.py)."""

    async def reveal(self, name: str) -> str: ...


def sign(key: bytes, body: bytes) -> str:
    """The signature header's value; receivers compare it with ``hmac.compare_digest``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def slack_body(note: Notification) -> dict[str, str]:
    return {"text": f"*{note.title()}*\n{note.message}"}


def email_message(target: Target, note: Notification) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = note.title()
    msg["From"] = target.mail_from or ""
    msg["To"] = ", ".join(target.mail_to)
    msg["X-Patrd-Kind"] = note.kind
    msg.set_content(note.message + "\n\n" + json.dumps(note.payload(), indent=2) + "\n")
    return msg


async def send(
    target: Target, note: Notification, session: aiohttp.ClientSession, secrets: Secrets | None
) -> None:
    if target.type is TargetType.EMAIL:
        password = await _secret(secrets, target.password_secret, "password_secret")
        await asyncio.to_thread(_send_mail, target, email_message(target, note), password)
        return
    url = target.url or await _secret(secrets, target.url_secret, "url_secret")
    if not url or not url_ok(url):
        raise DeliveryError("url_secret: the secret does not hold an http(s) URL", retry=False)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"patrd/{__version__}",
        "X-Patrd-Kind": note.kind,
        "X-Patrd-Delivery": note.id,
    }
    payload = slack_body(note) if target.type is TargetType.SLACK else note.payload()
    body = json.dumps(payload, separators=(",", ":")).encode()
    if target.type is TargetType.WEBHOOK and target.secret is not None:
        key = await _secret(secrets, target.secret, "secret")
        headers[SIGNATURE_HEADER] = sign((key or "").encode(), body)
    await _post(session, url, body, headers, target.timeout_s)


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], limit_s: float
) -> None:
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit_s),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            if resp.status >= 300:
                retry = resp.status >= 500 or resp.status in RETRYABLE_STATUS
                raise DeliveryError(f"HTTP {resp.status} from receiver", retry=retry)
    except TimeoutError:
        raise DeliveryError(f"no answer within {limit_s:g}s", retry=True) from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(f"cannot reach receiver: {exc}", retry=True) from None


def _send_mail(target: Target, msg: EmailMessage, password: str | None) -> None:
    assert target.smtp_host is not None
    try:
        with smtplib.SMTP(target.smtp_host, target.smtp_port, timeout=target.timeout_s) as smtp:
            if target.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if target.username and password is not None:
                smtp.login(target.username, password)
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.smtp_code}", retry=400 <= exc.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryError("SMTP server refused every recipient", retry=False) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP: {exc}", retry=True) from None


async def _secret(secrets: Secrets | None, name: str | None, field: str) -> str | None:
    if name is None:
        return None
    if secrets is None:
        raise DeliveryError(f"{field}: secrets are not available", retry=False)
    try:
        return await secrets.reveal(name)
    except Exception as exc:  # NotFound, a wrong key: the target cannot be served
        raise DeliveryError(f"{field}: secret {name!r}: {exc}", retry=False) from None
