"""A plain registry (Debian's docker-registry) that patrd does not run: no notifications."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.daemon import free_port


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
