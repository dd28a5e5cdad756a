"""One TLS session-ticket key for every proxy worker process.

A session ticket is the server's session state, encrypted with the
listener's ticket key; a client resumes (no certificate, no signature: an
abbreviated handshake) only if the process it reaches can decrypt it. OpenSSL
draws a random key per ``SSL_CTX``, so with N workers sharing the port
(``SO_REUSEPORT``) a returning client resumed only on the worker that issued
its ticket: 1 time in N. nginx shares one key between its workers for the
same reason. The daemon draws the key (:func:`new_ticket_key`) and sends it
to its workers over their control socket; each sets it on its listener
context (:func:`set_ticket_key`), which is the one OpenSSL encrypts and
decrypts tickets with, whatever certificate the SNI callback picks.

Python's ``ssl`` has no call for it: :mod:`patrd.tls.openssl_ctx` reaches the
``SSL_CTX``. When that cannot be done, nothing is set: each worker keeps its
own key, as before (resumption then works on the issuing worker only).
"""

from __future__ import annotations

import ctypes
import os
import ssl
from typing import Final

from patrd.tls.openssl_ctx import checked_ssl_ctx

__all__ = ["TICKET_KEY_BYTES", "new_ticket_key", "set_ticket_key"]

# SSL_CTX_set_tlsext_ticket_keys (a macro over SSL_CTX_ctrl), OpenSSL >= 1.1.0:
# 80 bytes, the key name (16), the HMAC secret (32), the AES key (32).
TICKET_KEY_BYTES: Final = 80
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS: Final = 59


def new_ticket_key() -> bytes:
    return os.urandom(TICKET_KEY_BYTES)


def set_ticket_key(ctx: ssl.SSLContext, key: bytes) -> bool:
    """Encrypt and decrypt ``ctx``'s session tickets with ``key``; False if it cannot be set."""
    if len(key) != TICKET_KEY_BYTES:
        raise ValueError(f"a ticket key is {TICKET_KEY_BYTES} bytes, not {len(key)}")
    found = checked_ssl_ctx(ctx)
    if found is None:
        return False
    lib, pointer = found
    buf = ctypes.create_string_buffer(key, len(key))
    return bool(lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(key), buf))
