"""Images that fail on purpose: derived from the test image with Dockerfile changes."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest


def derived_image(base: str, repo: str, *changes: str) -> Iterator[tuple[str, str]]:
    """``repo:<unique>``: ``base`` with Dockerfile ``changes`` (docker commit); removed after."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    ref = f"{repo}:{tag}"
    cid = subprocess.run(
        ["docker", "create", base], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        flags = [arg for change in changes for arg in ("--change", change)]
        subprocess.run(["docker", "commit", *flags, cid, ref], capture_output=True, check=True)
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    try:
        yield repo, tag
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


@pytest.fixture
def crash_image(test_images: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Prints a line on stderr and exits 3."""
    yield from derived_image(
        test_images["v1"], "patrd-test/crash", 'CMD ["/bin/sh", "-c", "echo boom >&2; exit 3"]'
    )


@pytest.fixture
def unstartable_image(test_images: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Runs as a user its passwd file lacks: Docker refuses to start the container."""
    yield from derived_image(test_images["v1"], "patrd-test/nostart", "USER nosuchuser")
