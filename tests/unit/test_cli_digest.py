"""``create --image REPO[:TAG]@sha256:…``: the digest is split off, checked, and explained."""

from __future__ import annotations

import pytest

from patrd.cli.args import create_body, image_digest
from patrd.cli.client import UsageError
from patrd.cli.main import parse_args
from patrd.cli.pinning import mismatch
from patrd.model.spec import parse_create

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "tag"),
    [(f"ghcr.io/org/app@{DIGEST}", None), (f"ghcr.io/org/app:v2@{DIGEST}", "v2")],
)
def test_the_body_names_the_tag_and_the_digest_is_kept_apart(image: str, tag: str | None) -> None:
    args = parse_args(["create", "web", "--image", image, "--port", "80"])
    body = create_body(args)
    assert (body["registry"], body["image"], body.get("tag")) == ("ghcr.io", "org/app", tag)
    assert image_digest(args) == DIGEST
    parse_create(body, region="local")  # the API takes the body as it is


def test_no_digest_is_none() -> None:
    assert image_digest(parse_args(["create", "web", "--image", "nginx:1", "--port", "80"])) is None


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "ab" * 32, "sha256:" + "AB" * 32])
def test_a_malformed_digest_is_a_usage_error(digest: str) -> None:
    args = parse_args(["create", "web", "--image", f"nginx@{digest}", "--port", "80"])
    with pytest.raises(UsageError, match="64 lowercase hex characters"):
        image_digest(args)


def test_the_refusal_says_what_the_tag_points_at_and_what_to_do() -> None:
    other = "sha256:" + "cd" * 32
    line = mismatch(f"app:v1@{DIGEST}", "v1", DIGEST, other, "web")
    assert line.startswith(f"--image app:v1@{DIGEST}: tag 'v1' points at {other}, not {DIGEST}")
    assert "web was removed again (it never ran)" in line
    assert f"REPO:TAG@{DIGEST}" in line and f"patrctl revert NAME {DIGEST}" in line
    assert "has no registry digest" in mismatch("app", "latest", DIGEST, None, "web")
