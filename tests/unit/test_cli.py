"""patrctl: argument parsing, request bodies, rendering, and the unix-socket transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from patrd.api.app import build_app, serve_api
from patrd.cli import main as cli
from patrd.cli import serve, waiting
from patrd.cli.args import create_body, ports_from_args, update_body
from patrd.cli.client import ApiError, CliError, UsageError, make_client
from patrd.cli.main import main, parse_args
from patrd.cli.output import (
    deployments_table,
    event_line,
    history_table,
    image_ref,
    instances_table,
    ready_column,
    render_fields,
    render_table,
)
from patrd.settings.config import ApiConfig, Config, Listen, ProxyConfig
from patrd.state.store import Store
from tests.support.api_fakes import ScriptedController

SPEC: dict[str, Any] = {
    "name": "web",
    "registry": "docker.io",
    "image": "library/nginx",
    "tag": "1.25",
    "ports": {"80": "http"},
    "env": {"A": "1", "B": "2"},
    "scale": {"min": 1, "max": 3},
    "resources": {"cpu": 0.5, "memory_mb": 256},
    "deploy_on_create": True,
    "region": "local",
}


def deployment(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "d1",
        "name": "web",
        "revision": 2,
        "status": "running",
        "status_reason": "",
        "intent": "run",
        "created_at": "2024-05-01T10:00:00.000Z",
        "updated_at": "2024-05-01T10:05:00.000Z",
        "spec": SPEC,
        "urls": ["http://80-web.example.test"],
        "instances": [
            {
                "name": "web-0",
                "container_id": "abc",
                "revision": 2,
                "slot": 0,
                "state": "running",
                "ready": True,
                "address": "172.18.0.2",
                "restarts": 0,
            }
        ],
    }
    return {**base, **overrides}


# --- argument parsing ---------------------------------------------------------


def test_global_flags_before_or_after_the_verb() -> None:
    before = parse_args(["--socket", "/tmp/a.sock", "--json", "list"])
    after = parse_args(["list", "--socket", "/tmp/a.sock", "--json"])
    for args in (before, after):
        assert (args.verb, args.socket, args.json, args.url) == ("list", "/tmp/a.sock", True, None)


def test_defaults() -> None:
    args = parse_args(["list"])
    assert (args.socket, args.url, args.token_file, args.json) == (None, None, None, False)


def test_create_flags() -> None:
    args = parse_args(
        [
            "create",
            "web",
            "--image",
            "library/nginx",
            "--tag",
            "1.25",
            "--port",
            "80",
            "--port",
            "8080:http",
            "--env",
            "A=1",
            "--env",
            "URL=postgres://x?a=b",
            "--min",
            "2",
            "--max",
            "4",
            "--cpu",
            "0.5",
            "--memory-mb",
            "256",
            "--no-deploy",
            "--region",
            "local",
        ]
    )
    assert create_body(args) == {
        "name": "web",
        "image": "library/nginx",
        "tag": "1.25",
        "region": "local",
        "ports": {"80": "http", "8080": "http"},
        "env": {"A": "1", "URL": "postgres://x?a=b"},
        "scale": {"min": 2, "max": 4},
        "resources": {"cpu": 0.5, "memory_mb": 256},
        "deploy_on_create": False,
    }
    assert (args.wait, args.timeout) == (False, 300.0)


def test_create_minimal_flags_send_only_what_was_given() -> None:
    args = parse_args(["create", "web", "--image", "nginx", "--port", "80"])
    assert create_body(args) == {"name": "web", "image": "nginx", "ports": {"80": "http"}}


def test_create_from_file_with_flag_overrides(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "a", "image": "x", "env": {"K": "1"}, "ports": {}}))
    args = parse_args(["create", "b", "--file", str(spec_file), "--env", "L=2", "--max", "3"])
    assert create_body(args) == {
        "name": "b",
        "image": "x",
        "env": {"K": "1", "L": "2"},
        "ports": {},
        "scale": {"max": 3},
    }


@pytest.mark.parametrize(
    ("content", "phrase"), [("{", "not valid JSON"), ("[1]", "must hold a JSON object")]
)
def test_create_bad_file(tmp_path: Path, content: str, phrase: str) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(content)
    with pytest.raises(CliError, match=phrase):
        create_body(parse_args(["create", "--file", str(spec_file)]))


def test_create_missing_file() -> None:
    with pytest.raises(CliError, match="cannot read"):
        create_body(parse_args(["create", "--file", "/nonexistent/spec.json"]))


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["create", "--image", "nginx", "--port", "80"], "NAME"),
        (["create", "web", "--port", "80"], "--image"),
        # --port is optional: the API takes the image's one EXPOSEd port (test_image_ports.py)
    ],
)
def test_create_missing_flags_is_usage_error(
    argv: list[str], missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError, match=missing):
        create_body(parse_args(argv))
    assert main(["--socket", "/nonexistent.sock", *argv]) == 2
    assert missing in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "web", "--image", "x", "--port", "80", "--env", "NOVALUE"],
        ["create", "web", "--image", "x", "--port", "80", "--env", "=v"],
        ["create", "web", "--image", "x", "--port", "80", "--min", "two"],
        ["create", "web", "--image", "x", "--port", "80", "--wait", "--timeout", "0"],
        ["events", "web", "--limit", "0"],
        ["--socket", "/a", "--url", "http://b", "list"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "create" in capsys.readouterr().out


def test_ports_from_args() -> None:
    assert ports_from_args(["80", "8080:http", "70000", "53:udp"]) == {
        "80": "http",
        "8080": "http",
        "70000": "http",
        "53": "udp",
    }


def test_update_body_merges_env_into_current() -> None:
    args = parse_args(["update", "web", "--env", "C=3", "--env", "A=9", "--unset-env", "B"])
    assert update_body(args, SPEC) == {"env": {"A": "9", "C": "3"}}


def test_update_body_partial_fields() -> None:
    args = parse_args(["update", "web", "--port", "8080", "--max", "5", "--cpu", "2"])
    assert update_body(args, SPEC) == {
        "ports": {"8080": "http"},
        "scale": {"max": 5},
        "resources": {"cpu": 2.0},
    }


def test_update_body_unset_unknown_env() -> None:
    args = parse_args(["update", "web", "--unset-env", "NOPE"])
    with pytest.raises(CliError) as info:
        update_body(args, SPEC)
    assert info.value.line() == "patrctl: --unset-env NOPE: NOPE is not set"


def test_update_body_empty() -> None:
    assert update_body(parse_args(["update", "web"]), SPEC) == {}


# --- connection settings ----------------------------------------------------------


def test_socket_from_flag_env_default() -> None:
    assert make_client(socket_path="/a.sock", url=None, token_file=None, environ={}).target == (
        "/a.sock"
    )
    env = {"PATRD_SOCKET": "/env.sock"}
    assert make_client(socket_path=None, url=None, token_file=None, environ=env).target == (
        "/env.sock"
    )
    default = make_client(socket_path=None, url=None, token_file=None, environ={})
    assert default.target == "/run/patrd/api.sock"
    assert "PATRD_SOCKET" in default.hint


def test_url_with_token_file_and_env(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    client = make_client(
        socket_path=None,
        url="https://patrd.example:7070/api/",
        token_file=str(token_file),
        environ={"PATRD_TOKEN": "from-env"},
    )
    assert (client.token, client.base_path) == ("abc123", "/api")
    client = make_client(
        socket_path=None, url="http://10.0.0.2:7070", token_file=None, environ={"PATRD_TOKEN": "e"}
    )
    assert (client.token, client.base_path) == ("e", "")


@pytest.mark.parametrize("url", ["ftp://host", "localhost:7070", "http://"])
def test_bad_url(url: str) -> None:
    with pytest.raises(UsageError, match="--url"):
        make_client(socket_path=None, url=url, token_file=None, environ={})


@pytest.mark.parametrize("content", [None, "  \n"])
def test_bad_token_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CliError, match=r"token file|cannot read"):
        make_client(socket_path=None, url="http://h:1", token_file=str(path), environ={})


def test_unreachable_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nothing.sock"
    assert main(["--socket", str(path), "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"patrctl: cannot reach patrd at {path}: ")
    assert err.count("\n") == 1


# --- rendering ------------------------------------------------------------------


def test_render_table_aligns_columns() -> None:
    table = render_table(["NAME", "STATUS"], [["web", "running"], ["a-long-name", "x"]])
    assert table.splitlines() == [
        "NAME         STATUS",
        "web          running",
        "a-long-name  x",
    ]


def test_render_table_empty() -> None:
    assert render_table(["A", "BB"], []) == "A  BB"


def test_render_fields() -> None:
    assert render_fields([("name", "web"), ("revision", "2")]).splitlines() == [
        "name:      web",
        "revision:  2",
    ]


def test_deployments_table() -> None:
    rows = [
        deployment(),
        deployment(
            name="api",
            status="stopped",
            intent="stop",
            revision=1,
            instances=[],
            urls=[],
            spec={**SPEC, "registry": "ghcr.io", "image": "me/api", "tag": "v2"},
        ),
    ]
    assert deployments_table(rows).splitlines() == [
        "NAME  STATUS   READY  REVISION  IMAGE               URL",
        "web   running  1/1    2         library/nginx:1.25  http://80-web.example.test",
        "api   stopped  0/0    1         ghcr.io/me/api:v2   -",
    ]


@pytest.mark.parametrize(
    ("intent", "ready_flags", "scale", "expected"),
    [
        ("run", [True], {"min": 1, "max": 1}, "1/1"),
        ("run", [False], {"min": 2, "max": 4}, "0/2"),
        ("run", [True, True, True], {"min": 1, "max": 4}, "3/3"),
        ("run", [True, True], {"min": 1, "max": 1}, "2/1"),  # old + new during a rollout
        ("stop", [], {"min": 2, "max": 2}, "0/0"),
        ("created", [], {"min": 1, "max": 1}, "0/0"),
    ],
)
def test_ready_column(
    intent: str, ready_flags: list[bool], scale: dict[str, int], expected: str
) -> None:
    d = deployment(
        intent=intent,
        instances=[{"ready": r, "state": "running"} for r in ready_flags],
        spec={**SPEC, "scale": scale},
    )
    assert ready_column(d) == expected


def test_image_ref() -> None:
    assert image_ref(SPEC) == "library/nginx:1.25"
    assert image_ref({**SPEC, "registry": "localhost:5000"}) == "localhost:5000/library/nginx:1.25"


def test_instances_table() -> None:
    rows = [
        deployment()["instances"][0],
        {
            "name": "web-1",
            "state": "created",
            "ready": False,
            "address": None,
            "revision": 3,
            "restarts": 2,
            "probe": {"phase": "starting", "last": "connection refused", "liveness_failures": 0},
        },
    ]
    assert instances_table(rows).splitlines() == [
        "NAME   STATE    READY  ADDRESS     REVISION  RESTARTS  PROBE",
        "web-0  running  yes    172.18.0.2  2         0         -",
        "web-1  created  no     -           3         2         starting (connection refused)",
    ]


def test_probe_flags_build_probe_bodies() -> None:
    args = parse_args(
        [
            "create",
            "web",
            "--image",
            "x",
            "--port",
            "80",
            "--startup-probe",
            "80:/healthz",
            "--probe-period",
            "2",
            "--probe-failures",
            "5",
        ]
    )
    body = create_body(args)
    assert body["startup_probe"] == {
        "port": 80,
        "path": "/healthz",
        "period_s": 2.0,
        "failure_threshold": 5,
    }
    assert "liveness_probe" not in body
    args = parse_args(["update", "web", "--no-startup-probe"])
    assert update_body(args, {"env": {}}) == {"startup_probe": None}
    with pytest.raises(UsageError):
        create_body(
            parse_args(
                ["create", "web", "--image", "x", "--port", "80", "--liveness-probe", "healthz"]
            )
        )


def test_history_table() -> None:
    table = history_table(
        [
            {
                "revision": 2,
                "digest": "sha256:" + "a" * 64,
                "image": "web:1",
                "tag": "1",
                "state": "failed",
                "reason": "startup probe failed",
                "created_at": "t",
                "deployed_at": None,
            }
        ]
    )
    assert table.splitlines()[1].split()[:4] == ["2", "sha256:aaaaaaaaaaaa", "-", "-"]
    assert "failed" in table.splitlines()[1]


def test_history_table_folds_settings_revisions_under_their_release() -> None:
    def entry(revision: int, how: str, digest: str) -> dict[str, object]:
        return {
            "revision": revision,
            "digest": "sha256:" + digest * 64,
            "image_id": "sha256:" + digest * 64,
            "how": how,
            "release": how != "settings",
            "state": "superseded",
            "reason": "",
            "created_at": "t",
            "deployed_at": "t",
        }

    history = [
        entry(5, "settings", "b"),
        entry(4, "settings", "b"),
        entry(3, "push", "b"),
        entry(2, "settings", "a"),
        entry(1, "create", "a"),
    ]
    lines = history_table(history).splitlines()
    assert len(lines) == 3, lines
    assert lines[1].split()[0] == "3" and "push (+2 settings: 4, 5)" in lines[1]
    assert lines[2].split()[0] == "1" and "create (+1 settings: 2)" in lines[2]
    assert len(history_table(history, everything=True).splitlines()) == 6


def test_event_line() -> None:
    event = {"id": 1, "at": "2024-05-01T10:00:00.000Z", "kind": "status", "message": "status x"}
    assert event_line({**event, "revision": 2}) == (
        "2024-05-01T10:00:00.000Z  status   x (revision 2)"
    )
    assert event_line({**event, "revision": None}) == "2024-05-01T10:00:00.000Z  status   x"


def test_error_line_format() -> None:
    assert ApiError(422, "invalid", "port must be a number", "ports.70000").line() == (
        "patrctl: --port 70000: port must be a number"
    )
    assert CliError("boom").line() == "patrctl: boom"


# --- end to end over the unix socket ------------------------------------------------


@pytest.fixture
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, ScriptedController]]:
    monkeypatch.setattr(waiting, "POLL_INTERVAL_S", 0.02)
    store = await Store.open(tmp_path / "patrd.db")
    controller = ScriptedController(store)
    config = Config(
        api=ApiConfig(max_body_bytes=64 * 1024),
        proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 80),), base_domain="example.test"),
    )
    sock = tmp_path / "api.sock"
    runner = await serve_api(
        build_app(store, controller, config, token=None),
        socket_path=sock,
        socket_mode=0o600,
        tcp=None,
    )
    try:
        yield str(sock), controller
    finally:
        await runner.cleanup()
        for task in list(controller.tasks):
            task.cancel()
        await asyncio.gather(*controller.tasks, return_exceptions=True)
        await store.close()


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def test_list_json_over_unix_socket(
    served: tuple[str, ScriptedController], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, _ = served
    assert await run(["--socket", sock, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deployments": []}


async def test_workflow_over_unix_socket(
    served: tuple[str, ScriptedController], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, controller = served
    s = ["--socket", sock]

    code = await run(
        [
            *s,
            *("create", "web", "--image", "library/nginx", "--tag", "1.25", "--port", "80"),
            *("--env", "A=1", "--wait", "--timeout", "10"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "created web (revision 1); status deploying" in out
    assert "http://80-web.example.test" in out
    assert "pull     pulling library/nginx:1.25 (revision 1)" in out
    assert "status   running (revision 1)" in out
    assert out.rstrip().endswith("web: running")

    assert await run([*s, "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "READY", "REVISION", "IMAGE", "URL"]
    assert lines[1].split() == [
        "web",
        "running",
        "1/1",
        "1",
        "library/nginx:1.25",
        "http://80-web.example.test",
    ]

    assert await run([*s, "show", "web"]) == 0
    out = capsys.readouterr().out
    assert "status:" in out and "running" in out
    assert "env:        A (values: --json)" in out
    assert "INSTANCES" in out and "web-0" in out and "172.18.0.2" in out
    events_part = out.split("EVENTS\n", 1)[1]
    assert 1 <= len(events_part.strip().splitlines()) <= 5

    assert await run([*s, "update", "web", "--env", "B=2", "--max", "3", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "updated web to revision 2" in out
    assert out.rstrip().endswith("web: running")

    assert await run([*s, "show", "web", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["spec"]["env"] == {"A": "1", "B": "2"}
    assert shown["spec"]["scale"] == {"min": 1, "max": 3, "target_cpu": 80}

    assert await run([*s, "events", "web"]) == 0
    out = capsys.readouterr().out
    assert "created  deployment created (revision 1)" in out
    assert "updated  revision 2\n" in out

    assert await run([*s, "events", "web", "--json", "--limit", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 2

    # stop --wait waits for the instances to go, not only for the status.
    assert await run([*s, "stop", "web", "--wait", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["intent"] == "stop"
    assert controller.live == set()

    assert await run([*s, "start", "web", "--wait"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("web: running")

    assert await run([*s, "delete", "web", "--confirm", "web", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "web: deleting" in out
    assert out.rstrip().endswith("web: deleted")

    assert await run([*s, "show", "web"]) == 1
    assert capsys.readouterr().err == "patrctl: deployment 'web' not found\n"


async def test_api_errors_print_one_line_with_field(
    served: tuple[str, ScriptedController], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, _ = served
    s = ["--socket", sock]
    assert await run([*s, "create", "web", "--image", "nginx", "--port", "70000"]) == 1
    err = capsys.readouterr().err
    assert err == "patrctl: --port 70000: port must be a number from 1 to 65535\n"

    assert await run([*s, "create", "web", "--image", "nginx", "--port", "80"]) == 0
    capsys.readouterr()
    assert await run([*s, "delete", "web", "--confirm", "wbe"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("patrctl: --confirm: confirm 'wbe' does not match")

    assert await run([*s, "update", "web"]) == 2
    assert "nothing to update" in capsys.readouterr().err


async def test_wait_reports_errored(
    served: tuple[str, ScriptedController], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, controller = served
    controller.outcome = "errored"
    code = await run(
        ["--socket", sock, "create", "web", "--image", "nginx", "--port", "80", "--wait"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "status   errored: image not found (revision 1)" in captured.out
    assert captured.err == "patrctl: web errored: image not found\n"


async def test_wait_times_out(
    served: tuple[str, ScriptedController], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, controller = served
    controller.outcome = "none"
    code = await run(
        [
            *("--socket", sock, "create", "web", "--image", "nginx", "--port", "80"),
            *("--wait", "--timeout", "0.2"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err == (
        "patrctl: timed out after 0.2s waiting for web to be running (status: deploying)\n"
    )


async def test_events_follow(
    served: tuple[str, ScriptedController],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, controller = served
    controller.outcome = "none"
    assert await run(["--socket", sock, "create", "web", "--image", "nginx", "--port", "80"]) == 0
    capsys.readouterr()

    sleeps = 0
    loop = asyncio.get_running_loop()

    def fake_sleep(_: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 1:  # a new event arrives while following
            asyncio.run_coroutine_threadsafe(
                controller.store.add_event(controller.woken[0] or "", "pull", "layer 1/3"), loop
            ).result()
        if sleeps == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(waiting, "pause", fake_sleep)
    assert await run(["--socket", sock, "events", "web", "--follow"]) == 130
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["created", "pull"]


async def test_url_transport_with_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(tmp_path / "patrd.db")
    token_file = tmp_path / "token"
    token_file.write_text("tcp-token\n")
    runner = await serve_api(
        build_app(store, ScriptedController(store), Config(), token="tcp-token"),
        socket_path=tmp_path / "api.sock",
        socket_mode=0o600,
        tcp=("127.0.0.1", 0),
    )
    try:
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        url = f"http://127.0.0.1:{port}"
        capsys.readouterr()  # the daemon's log line
        assert await run(["--url", url, "--token-file", str(token_file), "list", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"deployments": []}

        monkeypatch.delenv("PATRD_TOKEN", raising=False)
        assert await run(["--url", url, "list"]) == 1
        assert capsys.readouterr().err.startswith("patrctl: missing bearer token")

        monkeypatch.setenv("PATRD_TOKEN", "wrong")
        assert await run(["--url", url, "list"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("patrctl: invalid bearer token; ")
        assert "--token-file" in err and "PATRD_TOKEN" in err
    finally:
        await runner.cleanup()
        await store.close()


# --- patrd serve ------------------------------------------------------------------


def test_daemon_main_loads_config_with_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "patrd.toml"
    config_file.write_text('[daemon]\nregion = "home"\n[proxy]\nbase_domain = "a.test"\n')
    seen: list[Config] = []

    async def fake_serve(config: Config) -> int:
        seen.append(config)
        return 7

    monkeypatch.setattr(serve, "_daemon_serve", lambda: fake_serve)
    code = cli.daemon_main(
        [
            *("serve", "--config", str(config_file), "--data-dir", str(tmp_path / "data")),
            *("--api-socket", str(tmp_path / "api.sock")),
            *("--http-listen", "127.0.0.1:8080", "--http-listen", "[::1]:8081"),
            *("--base-domain", "b.test", "--log-level", "debug", "--log-format", "json"),
        ]
    )
    assert code == 7
    (config,) = seen
    assert config.daemon.region == "home"
    assert config.daemon.data_dir == tmp_path / "data"
    assert (config.daemon.log_level, config.daemon.log_format) == ("debug", "json")
    assert config.api.socket == tmp_path / "api.sock"
    assert [str(listen) for listen in config.proxy.http_listen] == [
        "127.0.0.1:8080",
        "[::1]:8081",
    ]
    assert config.proxy.base_domain == "b.test"


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["serve", "--config", "/nonexistent/patrd.toml"], "does not exist"),
        (["serve", "--config", "{cfg}", "--log-level", "loud"], "--log-level"),
        (["serve", "--config", "{cfg}", "--http-listen", "nowhere"], "--http-listen"),
    ],
)
def test_daemon_main_config_error_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    phrase: str,
) -> None:
    config_file = tmp_path / "patrd.toml"
    config_file.write_text("")

    def no_daemon() -> Any:
        raise AssertionError("must not start the daemon")

    monkeypatch.setattr(serve, "_daemon_serve", no_daemon)
    code = cli.daemon_main([a.replace("{cfg}", str(config_file)) for a in argv])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("patrd: config: ")
    assert phrase in err


@pytest.mark.parametrize("argv", [[], ["serve"], ["run"]])
def test_daemon_main_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.daemon_main(argv) == 2
    assert "usage: patrd" in capsys.readouterr().err
