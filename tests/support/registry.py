"""Registries in tests: a plain one (Debian's docker-registry) that patrd does not run,
and clients that try again while a registry is still starting."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.daemon import free_port
from tests.support.waits import until_sync


@contextlib.contextmanager
def plain_registry(root: Path) -> Iterator[str]:
    """A registry on a free loopback port, storing under ``root``; its ``host:port``."""
    port = free_port()
    config = root / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def retry_while_starting(
    argv: list[str], env: dict[str, str] | None = None, stdin: str = "", timeout: float = 30
) -> None:
    """Run ``argv`` until it exits 0 (a registry refuses while it starts)."""
    errors: list[str] = []

    def succeeded() -> bool:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env)
        errors[:] = [out.stderr.strip()]
        return out.returncode == 0

    until_sync(succeeded, timeout, " ".join(argv[:2]), interval=0.3, detail=lambda: errors)


def push_when_up(ref: str, env: dict[str, str] | None = None) -> None:
    """``docker push ref``, tried again while the registry is still starting."""
    retry_while_starting(["docker", "push", ref], env=env)
