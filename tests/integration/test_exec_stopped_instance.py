"""An exec into an instance that stopped after it was listed is a conflict, not an engine failure.

The API lists the running instances, picks one and asks Docker to create the
exec; a restart or a rollout may stop that container in between. Docker
answers 409 (or 404 once it is removed): the caller gets 409 "try again", as
for a deployment with no running instance, never a 503.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from patrd.engine.docker import DockerEngine
from patrd.model.errors import Conflict

pytestmark = pytest.mark.docker


async def test_exec_into_a_stopped_or_removed_container_is_a_conflict(
    test_images: dict[str, str],
) -> None:
    name = f"patrd-exec-stopped-{uuid.uuid4().hex[:8]}"
    cid = subprocess.run(
        ["docker", "create", "--name", name, test_images["v1"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    engine = DockerEngine("unix:///var/run/docker.sock", owner="test-exec-stopped")
    try:
        with pytest.raises(Conflict, match="stopped before the command could start"):
            await engine.exec_create(cid, ("true",), tty=False, stdin=False)
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=True)
        with pytest.raises(Conflict, match="stopped before the command could start"):
            await engine.exec_create(cid, ("true",), tty=False, stdin=False)
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        await engine.close()
