"""``patrctl token …`` and ``patrctl audit`` against a real app (unix socket and TCP)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from patrd.api.app import build_app, serve_api
from patrd.cli.main import main
from patrd.settings.config import Config
from patrd.state.store import Store
from tests.support.api_fakes import ScriptedController

ADMIN = "admin-token-file-value"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(unix socket path, TCP URL) of one app."""
    store = await Store.open(tmp_path / "patrd.db")
    sock = tmp_path / "api.sock"
    runner = await serve_api(
        build_app(store, ScriptedController(store), Config(), token=ADMIN),
        socket_path=sock,
        socket_mode=0o600,
        tcp=("127.0.0.1", 0),
    )
    try:
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        yield str(sock), f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await store.close()


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def test_token_lifecycle_and_audit(
    served: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock, url = served
    s = ["--socket", sock]
    capsys.readouterr()
    assert await run([*s, "token", "create", "viewer", "--scope", "read", "--expires", "30d"]) == 0
    out = capsys.readouterr()
    token = out.out.strip().splitlines()[-1]  # above it: the daemon's log line, in this test
    assert token.startswith("patr_")
    assert "shown once" in out.err and token not in out.err
    token_file = tmp_path / "viewer.token"
    token_file.write_text(token + "\n")
    t = ["--url", url, "--token-file", str(token_file)]

    assert await run([*t, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deployments": []}
    code = await run([*t, "create", "web", "--image", "library/nginx", "--port", "80"])
    assert code == 1
    assert "needs the 'write' scope" in capsys.readouterr().err

    assert await run([*s, "token", "list"]) == 0
    listing = capsys.readouterr().out
    assert "viewer" in listing and "read" in listing and token not in listing

    assert await run([*s, "audit", "--who", "token:viewer", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("POST", "/v1/deployments", 403)
    ]
    assert await run([*s, "audit"]) == 0
    text = capsys.readouterr().out
    assert f"uid:{os.getuid()}" in text and "POST    /v1/tokens" in text

    assert await run([*s, "token", "revoke", "viewer"]) == 0
    assert capsys.readouterr().out.endswith("revoked token viewer\n")
    assert await run([*t, "list"]) == 1
    assert "invalid bearer token" in capsys.readouterr().err


async def test_token_create_refuses_bad_input(
    served: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, _ = served
    capsys.readouterr()
    code = await run(
        ["--socket", sock, "token", "create", "x", "--scope", "deploy", "--expires", "soon"]
    )
    assert code == 1
    assert "patrctl: --expires: " in capsys.readouterr().err  # the flag, not expires_in
    assert await run(["--socket", sock, "token", "create", "x", "--scope", "root"]) == 2


async def test_token_limited_to_deployments(
    served: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, _ = served
    s = ["--socket", sock]
    args = ["token", "create", "ci", "--scope", "deploy", "--deployment", "web", "api"]
    assert await run([*s, *args, "--deployment", "db"]) == 0
    capsys.readouterr()
    assert await run([*s, "token", "list", "--json"]) == 0
    [token] = json.loads(capsys.readouterr().out)["tokens"]
    assert token["deployments"] == ["api", "db", "web"] and token["scope"] == "deploy"
