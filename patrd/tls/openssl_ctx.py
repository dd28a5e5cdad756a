"""The ``SSL_CTX`` behind an ``ssl.SSLContext``, for settings Python's ``ssl`` has no call for.

Two server settings need it: the session-ticket key shared by the proxy's
workers (:mod:`patrd.tls.tickets`) and the order of the TLS 1.3 cipher suites
(:mod:`patrd.tls.sni`). The calls go to the OpenSSL that ``_ssl`` is linked
to, through ``ctypes``, and only after checking that the ``SSL_CTX`` pointer
read from the context object is this context's (its options read back
equal). When anything does not match, nothing is written and the caller
keeps OpenSSL's default.
"""

from __future__ import annotations

import ctypes
import ssl
import sys

__all__ = ["checked_ssl_ctx", "libssl", "set_tls13_suites", "ssl_ctx_pointer"]


def libssl() -> ctypes.CDLL | None:
    """The OpenSSL ``_ssl`` uses (its symbols resolve through the extension module)."""
    if sys.implementation.name != "cpython":
        return None
    module = sys.modules.get("_ssl")
    path = getattr(module, "__file__", None)
    try:
        lib = ctypes.CDLL(path)  # None: the interpreter itself (a static _ssl)
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    except (OSError, AttributeError):
        return None
    return lib


def ssl_ctx_pointer(ctx: ssl.SSLContext, lib: ctypes.CDLL) -> int | None:
    """The ``SSL_CTX *`` right after the object header of ``_ssl._SSLContext``."""
    header = object.__basicsize__  # PyObject_HEAD: refcount, type
    pointer = ctypes.c_void_p.from_address(id(ctx) + header).value
    if not pointer:
        return None
    if int(lib.SSL_CTX_get_options(pointer)) != int(ctx.options):
        return None  # not this context's SSL_CTX: never write through it
    return pointer


def checked_ssl_ctx(ctx: ssl.SSLContext) -> tuple[ctypes.CDLL, int] | None:
    """The library and ``ctx``'s ``SSL_CTX *``, or None when either cannot be had."""
    lib = libssl()
    if lib is None:
        return None
    pointer = ssl_ctx_pointer(ctx, lib)
    return None if pointer is None else (lib, pointer)


def set_tls13_suites(ctx: ssl.SSLContext, suites: str) -> bool:
    """``SSL_CTX_set_ciphersuites``: the TLS 1.3 suites, in order; False if not set."""
    found = checked_ssl_ctx(ctx)
    if found is None:
        return False
    lib, pointer = found
    return bool(lib.SSL_CTX_set_ciphersuites(pointer, suites.encode("ascii")))
