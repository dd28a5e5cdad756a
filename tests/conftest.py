"""Fixtures shared by all tests: the Docker engine, the test images, a Store."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.executor_harness import harness  # noqa: F401 (a fixture)
from tests.support.images import build_test_images
from tests.support.stores import store  # noqa: F401 (a fixture for every test)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Fail (never skip) when the Docker engine does not answer: CI must have one."""
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"Docker engine not usable ({exc}); run scripts/setup", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"Docker engine not answering (`docker info` exit {proc.returncode}): "
            f"{proc.stderr.strip()}; run scripts/setup",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def test_images(docker_ready: None) -> dict[str, str]:
    """{"v1", "v2", "broken"} → image ref, built locally (see tests/support/images.py)."""
    return build_test_images()
