"""The restic adapter: the only module that runs the ``restic`` program.

Any repository restic speaks works (a local path, ``sftp:``, ``s3:`` for any
S3-compatible server, ``b2:``, ``rest:``). The password goes in a file
(``RESTIC_PASSWORD_FILE``) and backend credentials in the process
environment only: neither is ever in an argv, a log line or an error
message (errors carry restic's stderr with every credential value masked).

Snapshots carry ``key=value`` tags: ``kind=state|volume``, ``deployment=``,
``volume=``, ``instance=``, and ``run=`` (all snapshots of one backup run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from patrd.model.errors import PatrdError

STDERR_KEEP = 2000
_READ_ONLY = frozenset({"snapshots", "cat"})  # no lock needed (and none left behind)
_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]+@")


class ResticError(PatrdError):
    """restic failed; the message is restic's own (credentials masked)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    short_id: str
    time: float
    tags: Mapping[str, str]
    paths: tuple[str, ...]
    hostname: str

    @property
    def kind(self) -> str:
        return self.tags.get("kind", "")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "short_id": self.short_id,
            "time": self.time,
            "kind": self.kind,
            "run": self.tags.get("run", ""),
            "deployment": self.tags.get("deployment"),
            "volume": self.tags.get("volume"),
            "instance": _int_or_none(self.tags.get("instance")),
            "hostname": self.hostname,
        }


@dataclass(frozen=True)
class Repository:
    """Where and how: the repository string, password file, extra env (secret values)."""

    location: str
    password_file: Path
    cache_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    binary: str = "restic"

    def __repr__(self) -> str:
        return f"Repository({redact(self.location)!r}, env=<{len(self.env)} hidden>)"


def redact(location: str) -> str:
    """The repository without a ``user:password@`` part (rest:https://u:p@host/)."""
    return _USERINFO_RE.sub("***@", location)


class Restic:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._log = structlog.get_logger("patrd.state.restic")

    @property
    def location(self) -> str:
        return redact(self._repo.location)

    async def ensure_repository(self) -> bool:
        """Create the repository if there is none; True when it was created.

        Also removes stale locks a killed restic left behind (restic's own
        rule: only locks of dead processes on this host or older than 30 min).
        """
        try:
            await self._run(["cat", "config"], quiet=True)
        except ResticError as exc:
            text = str(exc)
            if "Is there a repository" not in text and "does not exist" not in text:
                raise
            await self._run(["init"])
            self._log.info("repository_created", repository=self.location)
            return True
        await self._run(["unlock"])
        return False

    async def backup_dir(self, directory: Path, tags: Mapping[str, str]) -> str:
        """Snapshot the contents of ``directory`` (stored relative: restores anywhere)."""
        out = await self._run(["backup", "--json", *_tag_flags(tags), "."], cwd=directory)
        return _snapshot_id(out)

    async def backup_file(self, source: Path, name: str, tags: Mapping[str, str]) -> str:
        """Snapshot one file's bytes as ``/<name>`` (the state archive)."""
        with source.open("rb") as stdin:
            out = await self._run(
                ["backup", "--json", "--stdin", "--stdin-filename", name, *_tag_flags(tags)],
                stdin=stdin.fileno(),
            )
        return _snapshot_id(out)

    async def snapshots(self, tags: Mapping[str, str] | None = None) -> list[Snapshot]:
        args = ["snapshots", "--json"]
        if tags:
            args += ["--tag", ",".join(f"{k}={v}" for k, v in tags.items())]
        out = await self._run(args)
        try:
            items = json.loads(out or b"[]") or []
        except ValueError as exc:
            raise ResticError(f"restic snapshots: unreadable answer: {exc}") from None
        found = [_snapshot(item) for item in items]
        return sorted(found, key=lambda s: s.time)

    async def restore(self, snapshot_id: str, target: Path) -> None:
        await self._run(["restore", snapshot_id, "--target", str(target)])

    async def dump(self, snapshot_id: str, name: str, dest: Path) -> None:
        """Write file ``/<name>`` of a snapshot to ``dest`` (0600)."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            await self._run(["dump", snapshot_id, f"/{name}"], stdout=fd)
        finally:
            os.close(fd)

    async def forget(self, keep_flags: Sequence[str]) -> None:
        """Apply the retention per volume/state (grouped by host and path), then prune."""
        await self._run(["forget", "--group-by", "host,paths", *keep_flags, "--prune"])

    # --- the process ---------------------------------------------------------------

    async def _run(
        self,
        args: list[str],
        *,
        cwd: Path | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        quiet: bool = False,
    ) -> bytes:
        repo = self._repo
        env = {
            **os.environ,
            **repo.env,
            "RESTIC_REPOSITORY": repo.location,
            "RESTIC_PASSWORD_FILE": str(repo.password_file),
            "RESTIC_CACHE_DIR": str(repo.cache_dir),
            "RESTIC_PROGRESS_FPS": "0.1",
        }
        env.pop("RESTIC_PASSWORD", None)
        env.pop("RESTIC_PASSWORD_COMMAND", None)
        try:
            proc = await asyncio.create_subprocess_exec(
                repo.binary,
                *(["--no-lock"] if args[0] in _READ_ONLY else []),
                *args,
                cwd=cwd,
                env=env,
                stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ResticError(f"cannot run {repo.binary}: {exc.strerror or exc}") from None
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()  # restic removes its lock on SIGTERM
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(proc.wait(), 10)
            raise
        if proc.returncode != 0:
            message = self._mask(err.decode(errors="replace").strip())[-STDERR_KEEP:]
            if not quiet:
                self._log.warning("restic_failed", command=args[0], code=proc.returncode)
            raise ResticError(f"restic {args[0]} failed ({proc.returncode}): {message}")
        return out or b""

    def _mask(self, text: str) -> str:
        text = text.replace(self._repo.location, redact(self._repo.location))
        for value in self._repo.env.values():
            if len(value) >= 4:
                text = text.replace(value, "***")
        return _USERINFO_RE.sub("***@", text)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _tag_flags(tags: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for key, value in tags.items():
        if "," in key or "," in value or "=" in key:
            raise ResticError(f"bad tag {key}={value}")
        flags += ["--tag", f"{key}={value}"]
    return flags


def _snapshot_id(out: bytes) -> str:
    for line in reversed(out.decode(errors="replace").splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("message_type") == "summary":
            return str(item["snapshot_id"])
    raise ResticError("restic backup: no summary in its answer")


def _snapshot(item: Mapping[str, Any]) -> Snapshot:
    tags: dict[str, str] = {}
    for tag in item.get("tags") or []:
        key, _, value = str(tag).partition("=")
        tags[key] = value
    return Snapshot(
        id=str(item["id"]),
        short_id=str(item.get("short_id") or item["id"][:8]),
        time=_parse_time(str(item["time"])),
        tags=tags,
        paths=tuple(str(p) for p in item.get("paths") or ()),
        hostname=str(item.get("hostname", "")),
    )


def _parse_time(text: str) -> float:
    """restic's RFC 3339 with nanoseconds → unix time (microseconds kept)."""
    match = re.fullmatch(r"(.+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        raise ResticError(f"restic: unreadable snapshot time {text!r}")
    base, frac, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float(f"0.{frac}") if frac else 0.0)
