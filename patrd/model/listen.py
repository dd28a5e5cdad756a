"""A listen address (``host:port``) as the daemon config and the command line spell it."""

from __future__ import annotations

from dataclasses import dataclass

from patrd.model.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str, key: str) -> Listen:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(key, f"{text!r} must be host:port, e.g. 0.0.0.0:80 or [::]:80")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} out of range 0..65535")
    host = host.strip("[]") or "0.0.0.0"
    return Listen(host, port)
