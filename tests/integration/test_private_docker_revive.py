"""A test engine whose dockerd died (SIGKILL) starts again (tests/support/private_docker.py).

Its managed containerd dies with it but can stay a zombie here, and a stale
``containerd.pid`` made the next dockerd wait for it ("timeout waiting for
containerd to start"): one swarm node's crash then failed every later test
of its module in CI.
"""

from __future__ import annotations

import os
import signal

from tests.support.private_docker import PrivateDocker


def test_a_killed_dockerd_starts_again() -> None:
    engine = PrivateDocker()
    engine.create_netns()
    try:
        engine.start(60)
        assert engine.proc is not None
        os.kill(engine.proc.pid, signal.SIGKILL)
        engine.proc.wait(30)
        assert engine.crashed()
        assert (engine.root / "exec" / "containerd" / "containerd.pid").exists()
        took = engine.start(60)
        assert engine.answers() and not engine.crashed()
        assert took < 30, took
    finally:
        engine.destroy()
