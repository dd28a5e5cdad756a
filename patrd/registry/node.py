"""The node registry and its push notifications (deploy on push).

patrd runs Debian's ``docker-registry`` (Docker Distribution) on the node
when ``[registry] enabled``; the registry POSTs its notification events to
patrd's webhook listener with a shared secret. Parsing and the config are
pure functions; ``RegistryProcess`` is a thin supervised subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patrd.model import checks as c
from patrd.model.errors import BadRequest, ConfigError
from patrd.model.listen import Listen
from patrd.model.sections import setting

EVENTS_CONTENT_TYPE = "application/vnd.docker.distribution.events.v1+json"
MANIFEST_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
MAX_EVENTS_BODY = 1024 * 1024
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def _address(value: Any, key: str, _: Path) -> str:
    text = c.str_at(value, key, ConfigError)
    if text and ("/" in text or text != text.strip() or " " in text):
        raise ConfigError(key, 'must be "host" or "host:port" (no scheme, no path)')
    return text


def _poll(value: Any, key: str, _: Path) -> float:
    if not c.is_number(value) or value < 0:
        raise ConfigError(key, "must be 0 (off) or a positive number")
    return float(value)


@dataclass(frozen=True)
class RegistryConfig:
    """``[registry]``: the node registry and deploy on push."""

    enabled: bool = setting(False, c.boolean(), "run Debian's docker-registry as node registry")
    listen: Listen = setting(Listen("127.0.0.1", 5000), c.listen(), "the registry's address")
    storage_dir: Path | None = setting(None, c.file_path(), "None: <data_dir>/registry")
    htpasswd_file: Path | None = setting(
        None, c.file_path(), "basic auth for pushes and pulls (htpasswd -B)"
    )
    # No htpasswd_file: patrd generates one credential (patrd/registry/auth.py).
    auth: bool = setting(True, c.boolean(), "false: no auth at all (loopback listen only)")
    webhook_listen: Listen = setting(
        Listen("127.0.0.1", 7071), c.listen(), "where the registry's push events arrive"
    )
    poll_interval_s: float = setting(
        0.0, _poll, "other registries: poll tags for new digests (0: off)"
    )
    binary: str = setting("docker-registry", c.text(), "the registry program")
    swarm_address: str = setting(
        "", _address, 'swarm: "host[:port]" the other nodes pull it at ("": host)'
    )

    @property
    def host(self) -> str:
        """How deployments with ``registry: "local"`` pull: host:port of the node registry."""
        host = "127.0.0.1" if self.listen.host in ("0.0.0.0", "::", "") else self.listen.host
        return f"{host}:{self.listen.port}"

    @property
    def nodes_host(self) -> str:
        """``engine.backend = "swarm"``: how every node pulls it (README, "Swarm: images
        on every node"); the same as :attr:`host` unless ``swarm_address`` says otherwise."""
        return self.swarm_address or self.host

    def validate(self) -> None:
        if not self.auth and self.htpasswd_file is not None:
            raise ConfigError(
                "registry.auth", "is false but registry.htpasswd_file is set; pick one"
            )
        if self.enabled and not self.auth and not _loopback(self.listen.host):
            raise ConfigError(
                "registry.listen",
                f"{self.listen} is beyond loopback and registry.auth = false: anyone who "
                "reaches it could push (and deploy); listen on 127.0.0.1 or turn auth on",
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class PushEvent:
    """A manifest pushed to ``repository:tag`` with content digest ``digest``."""

    repository: str
    tag: str
    digest: str
    at: float  # the registry's timestamp (seconds)


def parse_events(body: bytes) -> list[PushEvent]:
    """Manifest pushes with a tag, from one notification body; everything else is ignored."""
    if len(body) > MAX_EVENTS_BODY:
        raise BadRequest("notification body too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest("notification body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise BadRequest('notification body must be {"events": [...]}')
    pushes = []
    for event in data["events"]:
        if not isinstance(event, dict) or event.get("action") != "push":
            continue
        target = event.get("target")
        if not isinstance(target, dict) or target.get("mediaType") not in MANIFEST_TYPES:
            continue
        repository, tag, digest = target.get("repository"), target.get("tag"), target.get("digest")
        if not all(isinstance(v, str) and v for v in (repository, tag, digest)):
            continue
        assert isinstance(repository, str) and isinstance(tag, str) and isinstance(digest, str)
        if not DIGEST_RE.fullmatch(digest):
            continue  # it becomes part of the image reference patrd pins
        pushes.append(PushEvent(repository, tag, digest, _timestamp(event.get("timestamp"))))
    return pushes


def authorized(header: str | None, secret: str) -> bool:
    """``Authorization: Bearer <secret>``, compared in constant time."""
    scheme, _, presented = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), secret.encode()
    )


def render_config(
    config: RegistryConfig,
    storage: Path,
    webhook_url: str,
    secret: str,
    htpasswd: Path | None = None,
) -> str:
    """The registry's config (JSON is YAML): listener, basic auth, notifications to patrd.

    ``htpasswd``: the file the registry checks pushes and pulls against
    (``registry.htpasswd_file`` or the generated one); None only with
    ``registry.auth = false`` on loopback.
    """
    document: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
        },
        "http": {"addr": str(config.listen), "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "notifications": {
            "endpoints": [
                {
                    "name": "patrd",
                    "url": webhook_url,
                    "headers": {"Authorization": [f"Bearer {secret}"]},
                    "timeout": "2s",
                    "threshold": 5,
                    "backoff": "1s",
                    "ignore": {
                        "mediatypes": ["application/octet-stream"],
                        "actions": ["pull"],
                    },
                }
            ]
        },
    }
    if htpasswd is not None:
        document["auth"] = {"htpasswd": {"realm": "patrd-registry", "path": str(htpasswd)}}
    return json.dumps(document, indent=2)


def load_or_create_secret(path: Path) -> str:
    """The webhook's shared secret, kept 0600 in the data dir."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


class RegistryProcess:
    """Runs ``docker-registry serve``; returns (to be restarted) when it exits."""

    def __init__(
        self,
        config: RegistryConfig,
        data_dir: Path,
        webhook_url: str,
        secret: str,
        htpasswd: Path | None = None,
    ):
        self._config = config
        self._htpasswd = htpasswd
        self._storage = config.storage_dir or data_dir / "registry"
        self._config_file = data_dir / "registry.json"
        self._webhook_url = webhook_url
        self._secret = secret
        self._log = structlog.get_logger("patrd.registry.node")

    def write_config(self) -> Path:
        self._storage.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = render_config(
            self._config, self._storage, self._webhook_url, self._secret, self._htpasswd
        )
        tmp = self._config_file.with_name(f".{self._config_file.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        tmp.replace(self._config_file)
        return self._config_file

    async def run(self) -> None:
        path = await asyncio.to_thread(self.write_config)
        proc = await asyncio.create_subprocess_exec(
            self._config.binary,
            "serve",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._log.info("registry_started", listen=str(self._config.listen), pid=proc.pid)
        try:
            assert proc.stderr is not None
            async for line in proc.stderr:
                self._log.debug("registry_output", line=line.decode(errors="replace").rstrip())
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        raise RuntimeError(f"docker-registry exited with code {code}")


def _timestamp(value: Any) -> float:
    if isinstance(value, str):
        text = value.replace("Z", "+00:00")
        # Go prints nanoseconds; Python's fromisoformat takes at most microseconds.
        head, dot, tail = text.partition(".")
        if dot:
            digits = "".join(c for c in tail if c.isdigit())
            zone = tail[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text).timestamp()
    return 0.0
