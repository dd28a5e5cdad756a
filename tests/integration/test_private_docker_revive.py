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


def test_a_dockerd_that_dies_in_go_is_reported_from_its_last_words() -> None:
    """The crash report quotes the runtime's header and the stack under it, not
    the end of the goroutine dump that follows (all a log tail would show)."""
    engine = PrivateDocker()
    engine.create_netns()
    try:
        engine.start(60)
        assert engine.proc is not None
        os.kill(engine.proc.pid, signal.SIGABRT)  # dockerd does not trap it: Go dumps and exits
        engine.proc.wait(30)
        assert engine.crashed()
        lines = engine.crash_lines(40).splitlines()
        header = [i for i, line in enumerate(lines) if line.startswith("SIGABRT: abort")]
        assert header and header[0] <= 5, lines[:10]
        assert any(line.startswith("goroutine ") for line in lines), lines
        assert "SIGABRT: abort" not in engine.log_tail(40)  # what the report used to quote
    finally:
        engine.destroy()
