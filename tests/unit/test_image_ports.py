"""``create`` without ``ports``: the one TCP port the image declares, else a clear 422."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.api.image_ports import choose_port
from patrd.cli.args import create_body
from patrd.cli.main import parse_args
from patrd.model.errors import SpecError
from patrd.settings.config import Config
from patrd.state.store import Store
from tests.support.api_fakes import FakeController

Client = TestClient[web.Request, web.Application]


class Images:
    def __init__(self) -> None:
        self.exposed: dict[str, list[str] | None] = {}
        self.asked: list[str] = []

    async def exposed_ports(self, ref: str) -> list[str] | None:
        self.asked.append(ref)
        return self.exposed.get(ref)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Client, Images]]:
    store = await Store.open(tmp_path / "patrd.db")
    images = Images()
    app = build_app(store, FakeController(), Config(), token=None, image_ports=images)
    async with TestClient(TestServer(app)) as client:
        yield client, images
    await store.close()


@pytest.mark.parametrize(
    ("exposed", "port"),
    [(["80/tcp"], 80), (["8080/tcp", "53/udp"], 8080), (["3000"], 3000)],
)
def test_choose_the_single_tcp_port(exposed: list[str], port: int) -> None:
    assert choose_port("app:1", exposed) == port


@pytest.mark.parametrize(
    ("exposed", "words"),
    [
        ([], "declares no TCP port"),
        (["53/udp"], "declares no TCP port"),
        (["80/tcp", "443/tcp"], "declares several ports (80, 443)"),
        (None, "could not be inspected"),
    ],
)
def test_otherwise_ports_is_required_and_says_why(exposed: list[str] | None, words: str) -> None:
    with pytest.raises(SpecError) as info:
        choose_port("app:1", exposed)
    assert info.value.field == "ports" and words in info.value.message


async def test_create_without_ports_uses_the_image_port(api: tuple[Client, Images]) -> None:
    client, images = api
    images.exposed["ghcr.io/org/app:v2"] = ["8080/tcp"]
    body = {"name": "web", "registry": "ghcr.io", "image": "org/app", "tag": "v2"}
    resp = await client.post("/v1/deployments", json=body)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["spec"]["ports"] == {"8080": "http"}
    assert images.asked == ["ghcr.io/org/app:v2"]


async def test_create_without_ports_refused_when_the_image_is_ambiguous(
    api: tuple[Client, Images],
) -> None:
    client, images = api
    images.exposed["app:1"] = ["80/tcp", "443/tcp"]
    resp = await client.post("/v1/deployments", json={"name": "web", "image": "app", "tag": "1"})
    assert resp.status == 422
    body = await resp.json()
    assert body["field"] == "ports" and "(80, 443)" in body["message"]
    # an invalid body is refused for what is wrong with it, before any image lookup
    resp = await client.post("/v1/deployments", json={"name": "Web", "image": "app"})
    assert resp.status == 422 and (await resp.json())["field"] == "name"
    assert images.asked == ["app:1"]


def test_cli_create_needs_no_port() -> None:
    body = create_body(parse_args(["create", "web", "--image", "nginx:1.27"]))
    assert "ports" not in body
