"""patrctl's side of the wire: the API client, its errors, and the types of a verb.

Only the standard library (``http.client``, over the daemon's unix socket or
over TCP with a bearer token) so that ``patrctl`` starts fast. Every verb
module builds on this one; it imports no verb module.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.cli.words import error_line

DEFAULT_SOCKET = "/run/patrd/api.sock"
REQUEST_TIMEOUT_S = 30.0

JsonObject = dict[str, Any]


# --- errors ---------------------------------------------------------------


class CliError(Exception):
    """Printed as one line, exit 1."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def line(self, prog: str = "patrctl") -> str:
        """``patrctl: --port 99999: …``: the flag the field came from, else ``(field: …)``."""
        return error_line(self.message, self.field, prog)


class ApiError(CliError):
    """The API answered with an error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.status = status
        self.code = code


def api_error(status: int, data: Any, fallback: str) -> ApiError:
    """The ApiError an error answer (its decoded JSON body) stands for; ``fallback``
    is the message when the body has none (not JSON, or a proxy's page)."""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        field = data.get("field")
        return ApiError(
            status,
            str(data.get("error", "")),
            data["message"],
            field if isinstance(field, str) else None,
        )
    return ApiError(status, "http", fallback)


class UsageError(CliError):
    """Bad combination of flags that argparse cannot express; exit 2."""


# --- transport ------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix stream socket."""

    def __init__(self, path: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True, slots=True)
class Client:
    """One request per connection: the CLI makes few, and polls slowly."""

    connect: Callable[[], http.client.HTTPConnection]
    target: str  # for error messages: the socket path or the URL
    base_path: str = ""
    token: str | None = None
    hint: str = ""

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str | int] | None = None,
        body: Any = None,
    ) -> Any:
        url = self.base_path + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": "patrctl"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self.connect()
        try:
            with self.transport_errors():
                conn.request(method, url, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                status, reason = response.status, response.reason
        finally:
            conn.close()
        data = decode(raw)
        if status >= 400:
            raise api_error(status, data, f"HTTP {status} {reason}")
        return data

    @contextlib.contextmanager
    def transport_errors(self) -> Iterator[None]:
        """A socket or HTTP failure of a request or a stream: one message naming patrd's address."""
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise CliError(f"cannot reach patrd at {self.target}: {reason}{self.hint}") from exc
        except http.client.HTTPException as exc:
            raise CliError(f"bad answer from patrd at {self.target}: {exc!r}") from exc

    def get(self, path: str, **query: str | int) -> Any:
        return self.request("GET", path, query=query or None)


def decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def make_client(
    *,
    socket_path: str | None,
    url: str | None,
    token_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> Client:
    env = os.environ if environ is None else environ
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--url must be http(s)://host[:port][/prefix], not {url!r}")
        token = _read_token(token_file) if token_file else env.get("PATRD_TOKEN") or None
        host, port = parts.hostname, parts.port
        https = parts.scheme == "https"

        def connect() -> http.client.HTTPConnection:
            if https:
                return http.client.HTTPSConnection(host, port, timeout=REQUEST_TIMEOUT_S)
            return http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)

        return Client(connect, url, base_path=parts.path.rstrip("/"), token=token)
    path = socket_path or env.get("PATRD_SOCKET") or DEFAULT_SOCKET
    hint = (
        " (is patrd running? set --socket or PATRD_SOCKET)"
        if socket_path is None and "PATRD_SOCKET" not in env
        else ""
    )
    return Client(lambda: UnixHTTPConnection(path), path, hint=hint)


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise CliError(f"token file {path} is empty")
    return token


def deployment_path(name: str, *rest: str) -> str:
    """``/v1/deployments/NAME[/rest…]`` with NAME quoted."""
    parts = ["/v1/deployments", urllib.parse.quote(name, safe=""), *rest]
    return "/".join(parts)


# --- verbs ----------------------------------------------------------------

# What a verb runs: its exit status (errors are raised as CliError).
Handler = Callable[[Client, argparse.Namespace], int]
# ``verb(name, help, handler)``: the subparser of a new verb (main.py makes it).
AddVerb = Callable[[str, str, Handler], argparse.ArgumentParser]
