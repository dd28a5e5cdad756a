"""The domain model and the engine protocol load no I/O library (patrd/model/README.md).

A reader of the records or of the ``Engine`` protocol (the planner, the API's
read paths, the tests' FakeEngine) must not pull in aiodocker, aiohttp or
aiosqlite by importing them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

IO = ("aiodocker", "aiohttp", "aiosqlite")


@pytest.mark.parametrize(
    "module",
    [
        "patrd.engine.protocol",
        "patrd.engine.labels",
        "patrd.model.instances",
        "patrd.model.deployment",
        "patrd.model.records",
        "patrd.model.replicas",
        "patrd.model.naming",
        "patrd.model.capabilities",
    ],
)
def test_loads_no_io_library(module: str) -> None:
    code = f"import sys, {module}\nprint(','.join(m for m in {IO!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_the_adapter_does_load_docker() -> None:
    """The check above can fail: the Docker adapter itself loads aiodocker."""
    code = "import sys, patrd.engine.docker\nprint('aiodocker' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "True"
