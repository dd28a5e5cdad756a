"""patrd on a test swarm (tests/support/swarm.py): the manager's daemon, the nodes' agents."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support.daemon import REPO, Api, Daemon
from tests.support.swarm import Swarm, SwarmNode
from tests.support.waits import until_sync

AGENT_PORT = 7950  # engine.agent_port's default; free in each node's namespace


@contextlib.asynccontextmanager
async def swarm_daemon(
    swarm: Swarm, workdir: Path, **sections: dict[str, Any]
) -> AsyncIterator[tuple[Daemon, Api]]:
    """A patrd with ``engine.backend = "swarm"`` on the swarm's manager (plus ``sections``
    of config), and its API client; a node dockerd that crashed is started again first
    and reported in the daemon's failure messages."""
    if crashed := swarm.revive():
        print(f"\nstarted again after a crash in an earlier test:\n{crashed}")
    daemon = Daemon(workdir)
    daemon.reports.append(swarm.crash_report)
    daemon.config = {
        "engine": {"backend": "swarm"},
        "docker": {"socket": swarm.manager.url},
        **sections,
    }
    daemon.start()
    try:
        async with Api(daemon) as api:
            yield daemon, api
    finally:
        daemon.stop()


class Agent:
    """``patrd agent`` in a node's namespace, against that node's dockerd."""

    def __init__(self, node: SwarmNode, token_file: Path, log_path: Path, *extra: str) -> None:
        self.node = node
        self.log_path = log_path
        self.mark = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *node.engine.nsenter,
                    sys.executable,
                    "-m",
                    "patrd",
                    "agent",
                    "--listen",
                    f"0.0.0.0:{AGENT_PORT}",
                    "--token-file",
                    str(token_file),
                    "--docker",
                    node.url,
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        until_sync(self.listening, 30, f"the agent on node {node.index} listening", interval=0.1)

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited {self.proc.returncode}: {self.log()}")
        return "listening on" in self.log()

    def log(self) -> str:
        """This run's part of the log."""
        return self.log_path.read_bytes()[self.mark :].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
