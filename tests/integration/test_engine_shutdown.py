"""A start sent while dockerd shuts down is refused, never half run.

dockerd, told to stop, closes its listener (the socket file goes) and then
stops its containers, but keeps serving connections already open. patrd's
Docker adapter restarts a container on its ``die`` event; over a kept-alive
connection that start ran inside the dying engine (measured: it failed partway,
"failed to update store for object type *libnetwork.endpoint", or started the
container mid-shutdown), leaving state that made every later start fail
("task …: already exists"; docs/design.md, "Starts that fail because of the
engine"). The adapter opens a fresh connection per request, so such a start
fails at once as "Docker away". Uses a private dockerd in a test namespace.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from patrd.control.start_faults import StartFault, classify_start_error
from patrd.engine.docker import DockerEngine
from patrd.engine.labels import LABEL_DEPLOYMENT_ID, LABEL_OWNER
from patrd.model.errors import EngineError
from tests.support.private_docker import PrivateDocker, private_docker

pytestmark = pytest.mark.docker

OWNER = "shutdown-test"


async def _starts_during_stop(engine: PrivateDocker, cid: str) -> list[str]:
    """Stop dockerd; on the container's ``die`` start it again at once, as the
    executor does. What each start answered."""
    docker = DockerEngine(engine.url, OWNER)
    answers: list[str] = []
    try:
        # Connections used before, as a daemon that has been running has them.
        await asyncio.gather(*(docker.list_instances() for _ in range(4)))

        async def restart_on_die() -> None:
            async for event in docker.events():
                if event.action == "die" and event.container_id == cid:
                    for _ in range(3):
                        try:
                            await docker.start(cid)
                            answers.append("started")
                        except EngineError as exc:
                            answers.append(str(exc))
                        await asyncio.sleep(0.02)

        watch = asyncio.create_task(restart_on_die())
        await asyncio.sleep(0.3)  # subscribed
        await asyncio.to_thread(engine.stop)
        with contextlib.suppress(EngineError, TimeoutError):
            await asyncio.wait_for(watch, 10)  # the stream ends with dockerd
    finally:
        await docker.close()
    return answers


async def test_a_start_during_dockerd_shutdown_is_refused(test_images: dict[str, str]) -> None:
    with private_docker(images=(test_images["v1"],)) as engine:
        engine.docker("network", "create", "shutdown-net")
        for round_ in range(3):
            cid = engine.docker(
                "run",
                "-d",
                "--name",
                f"shutdown-{round_}",
                "--network",
                "shutdown-net",
                "--label",
                f"{LABEL_OWNER}={OWNER}",
                "--label",
                f"{LABEL_DEPLOYMENT_ID}=d{round_}",
                test_images["v1"],
            ).stdout.strip()
            answers = await _starts_during_stop(engine, cid)
            assert answers, "the die event came before the stream ended"
            assert "started" not in answers, answers
            assert all(classify_start_error(a) is StartFault.ENGINE_AWAY for a in answers), answers
            await asyncio.to_thread(engine.start)
            # Nothing stale was left behind: the same container starts as usual.
            started = engine.docker("start", cid, check=False)
            assert started.returncode == 0, started.stderr
            engine.docker("rm", "-f", cid)
