"""``patrctl backup``: the state archive (``backup FILE``) and off-site backups.

``backup FILE`` streams the data dir archive (``POST /v1/backup``) into FILE. The
words ``list``, ``run`` and ``restore`` are actions on the off-site backups
(``[backup]``, patrd/state/offsite.py); to write an archive to a file of such a
name, say ``./list``.

    patrctl backup list
    patrctl backup run [--no-wait]
    patrctl backup restore SNAPSHOT --deployment NAME [--volume V] [--target DIR]
    patrctl backup restore SNAPSHOT --output FILE      # patrd's state, for patrd restore
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tarfile
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patrd.cli.client import (
    AddVerb,
    ApiError,
    Client,
    CliError,
    JsonObject,
    UsageError,
    api_error,
    decode,
)
from patrd.cli.output import print_json, render_fields, render_table

ACTIONS = ("list", "run", "restore")
DEFAULT_WAIT_S = 3600.0
POLL_S = 1.0


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb(
        "backup",
        "FILE: write a backup of the daemon's data dir (holds secrets; 0600); "
        "list | run | restore SNAPSHOT: off-site backups ([backup])",
        cmd,
    )
    p.add_argument(
        "file",
        metavar="FILE|ACTION",
        help="the tar to write ('-' for stdout), or list, run or restore",
    )
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT", help="restore: run id or latest")
    p.add_argument("--deployment", metavar="NAME", help="restore: this deployment's volumes")
    p.add_argument("--volume", metavar="VOLUME", help="restore: only this volume")
    p.add_argument("--target", metavar="DIR", help="restore into this empty host directory")
    p.add_argument("--output", metavar="FILE", help="restore: write the run's state archive here")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for the job")
    p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS")


def cmd(client: Client, args: argparse.Namespace) -> int:
    action = args.file
    if action not in ACTIONS:
        if args.snapshot is not None:
            raise UsageError(f"backup FILE takes no second argument (got {args.snapshot!r})")
        return cmd_backup(client, args)
    if action == "list":
        return _list(client, args)
    if action == "run":
        job = client.request("POST", "/v1/backups")
        return _follow(client, args, job)
    if not args.snapshot:
        raise UsageError("backup restore needs SNAPSHOT (a run id from backup list, or latest)")
    if args.output:
        return _state(client, args)
    if not args.deployment:
        raise UsageError(
            "backup restore SNAPSHOT needs --deployment NAME (volumes) or --output FILE (state)"
        )
    body: JsonObject = {"deployment": args.deployment}
    if args.volume:
        body["volume"] = args.volume
    if args.target:
        body["target"] = str(Path(args.target).absolute())
    path = f"/v1/backups/{urllib.parse.quote(args.snapshot, safe='')}/restore"
    return _follow(client, args, client.request("POST", path, body=body))


def _list(client: Client, args: argparse.Namespace) -> int:
    data = client.request("GET", "/v1/backups")
    if args.json:
        print_json(data)
        return 0
    if not data.get("configured"):
        print("off-site backups are not configured (set [backup] repository)")
        return 0
    print(
        render_fields(
            [
                ("repository", str(data.get("repository", ""))),
                ("schedule", data.get("schedule") or "on request only"),
                ("next run", _when(data.get("next_run_at"))),
                ("last run", _when(data.get("last_run_at"))),
                ("last success", _when(data.get("last_success_at"))),
            ]
        )
    )
    if data.get("error"):
        print(f"repository error: {data['error']}")
    rows = [
        [
            run["id"],
            _when(run["time"]),
            "yes" if run.get("state") else "-",
            ",".join(run.get("deployments") or []) or "-",
            str(len(run.get("snapshots") or [])),
        ]
        for run in data.get("runs") or []
    ]
    print()
    print(render_table(["RUN", "TIME", "STATE", "DEPLOYMENTS", "SNAPSHOTS"], rows))
    return 0


def _follow(client: Client, args: argparse.Namespace, job: JsonObject) -> int:
    """Print the job; with waiting, poll it to the end; exit 1 when it failed."""
    if not args.json:
        print(f"{job['kind']} {job['id']}: started")
    if args.wait:
        deadline = time.monotonic() + args.timeout
        path = f"/v1/backups/jobs/{urllib.parse.quote(job['id'], safe='')}"
        while job["state"] == "running":
            if time.monotonic() > deadline:
                raise CliError(f"{job['kind']} {job['id']} still running after {args.timeout:g} s")
            time.sleep(POLL_S)
            job = client.request("GET", path)
    if args.json:
        print_json(job)
    else:
        for line in job.get("details") or []:
            print(f"  {line}")
        print(f"{job['kind']} {job['id']}: {job['state']}" + _suffix(job.get("message")))
    return 1 if job["state"] == "failed" else 0


def _state(client: Client, args: argparse.Namespace) -> int:
    """GET the run's state archive into FILE (temp 0600, then rename)."""
    dest = Path(args.output).absolute()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    path = f"/v1/backups/{urllib.parse.quote(args.snapshot, safe='')}/state"
    size = 0
    conn = client.connect()
    headers = {"User-Agent": "patrctl"}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    try:
        conn.request("GET", client.base_path + path, headers=headers)
        response = conn.getresponse()
        if response.status >= 400:
            raise _api_error(response)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := response.read(256 * 1024):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        raise CliError(f"cannot fetch the state archive: {exc.strerror or exc}") from exc
    except http.client.HTTPException as exc:
        raise CliError(f"bad answer from patrd at {client.target}: {exc!r}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        conn.close()
    print(f"wrote {dest} ({size} bytes); restore it with: patrd restore {dest} --config FILE")
    return 0


def _api_error(response: http.client.HTTPResponse) -> ApiError:
    return api_error(response.status, decode(response.read()), f"HTTP {response.status}")


def _when(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _suffix(message: Any) -> str:
    return f": {message}" if message else ""


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    """Stream ``POST /v1/backup`` into FILE: temp file 0600 in the same dir, then rename."""
    if args.file == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a backup to a terminal; redirect stdout")
        size = _download(client, "/v1/backup", sys.stdout.buffer)
        print(f"patrctl: wrote {size} bytes; {_BACKUP_WARNING}", file=sys.stderr)
        return 0
    dest = Path(args.file).absolute()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            size = _download(client, "/v1/backup", out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary = ""
    try:
        with tarfile.open(dest) as tar:
            manifest = tar.extractfile("patrd-backup.json")
            info = json.loads(manifest.read()) if manifest is not None else {}
        summary = (
            f": schema v{info['schema_version']}, {info['deployments']} deployments, "
            f"{len(info['files'])} files"
        )
    except (OSError, KeyError, ValueError, tarfile.TarError):
        summary = " (could not read its manifest back)"
    print(f"wrote {dest} ({size} bytes){summary}")
    print(f"patrctl: {_BACKUP_WARNING}", file=sys.stderr)
    return 0


_BACKUP_WARNING = "the backup holds secrets (keys, certificates, env values): keep it private"


def _download(client: Client, path: str, out: Any) -> int:
    """POST ``path`` and copy a 200 body into ``out``; API errors as ``Client.request``."""
    conn = client.connect()
    headers = {"User-Agent": "patrctl"}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    size = 0
    try:
        with client.transport_errors():
            conn.request("POST", client.base_path + path, headers=headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise api_error(response.status, decode(response.read()), f"HTTP {response.status}")
            while chunk := response.read(256 * 1024):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise CliError(f"cannot write the backup: {exc.strerror or exc}") from exc
                size += len(chunk)
            if response.length not in (None, 0):
                raise CliError("the backup was cut short; nothing was written")
    finally:
        conn.close()
    return size
