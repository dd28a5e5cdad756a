"""Pinned-release helpers: push to the node registry as another machine would, read what runs."""

from __future__ import annotations

import subprocess
from typing import Any

from tests.support.daemon import Api, Daemon, containers_of, docker_json, registry_addr
from tests.support.registry import retry_while_starting
from tests.support.waits import until_sync


def registry_creds(d: Daemon) -> str:
    """``user:password`` of the node registry's generated credential (0600 in the data dir)."""
    password = d.data_dir / "registry-password"
    until_sync(password.exists, 30, "the registry credential generated", d, interval=0.2)
    return f"patrd:{password.read_text().strip()}"


def skopeo_push(d: Daemon, source: str, repo: str, tag: str) -> str:
    """Copy a local image into the node registry as another machine would; its digest."""
    dest = f"docker://{registry_addr(d)}/{repo}:{tag}"
    creds = registry_creds(d)
    retry_while_starting(
        [
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            f"docker-daemon:{source}",
            dest,
        ]
    )
    inspect = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--creds",
            creds,
            "--format",
            "{{.Digest}}",
            dest,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return inspect.stdout.strip()


def image_of(d: Daemon, name: str) -> set[str]:
    return {docker_json("inspect", cid)[0]["Image"] for cid in containers_of(name)}


def image_id(ref: str) -> str:
    return str(docker_json("image", "inspect", ref)[0]["Id"])


async def history(api: Api, name: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/v1/deployments/{name}/history"))["history"])
