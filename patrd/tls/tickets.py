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

Python's ``ssl`` has no call for it, so this reaches ``SSL_CTX_ctrl`` of the
OpenSSL that ``_ssl`` is linked to through ``ctypes``, and first checks that
the ``SSL_CTX`` pointer it read is this context's (its options read back
equal). When anything does not match, nothing is set: each worker keeps its
own key, as before (resumption then works on the issuing worker only).
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
from typing import Final

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
    lib = _libssl() if sys.implementation.name == "cpython" else None
    if lib is None:
        return False
    pointer = _ssl_ctx_pointer(ctx, lib)
    if pointer is None:
        return False
    buf = ctypes.create_string_buffer(key, len(key))
    return bool(lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(key), buf))


def _libssl() -> ctypes.CDLL | None:
    """The OpenSSL ``_ssl`` uses: its symbols resolve through the extension module."""
    module = sys.modules.get("_ssl")
    path = getattr(module, "__file__", None)
    try:
        lib = ctypes.CDLL(path)  # None: the interpreter itself (a static _ssl)
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def _ssl_ctx_pointer(ctx: ssl.SSLContext, lib: ctypes.CDLL) -> int | None:
    """The ``SSL_CTX *`` right after the object header of ``_ssl._SSLContext``."""
    header = object.__basicsize__  # PyObject_HEAD: refcount, type
    pointer = ctypes.c_void_p.from_address(id(ctx) + header).value
    if not pointer:
        return None
    if int(lib.SSL_CTX_get_options(pointer)) != int(ctx.options):
        return None  # not this context's SSL_CTX: never write through it
    return pointer
