"""Pure parts of exec and one-off runs: instance choice, run checks, commands, exec sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from patrd.api.exec import pick_instance
from patrd.api.run_routes import EXEC_ROUTES, add_routes
from patrd.api.runs import ExecSessions
from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.errors import Conflict, NotFound, SpecError
from patrd.model.instances import ContainerState, Instance
from patrd.model.spec import parse_create
from patrd.run.oneoff import _OutputReader, check_runnable, parse_command, parse_timeout


def record(body: dict[str, Any], intent: Intent = Intent.RUN) -> DeploymentRecord:
    spec = parse_create({"name": "web", "image": "x", "ports": {"80": "http"}, **body}, region="")
    return DeploymentRecord(
        id="d1",
        name="web",
        revision=1,
        spec=spec,
        intent=intent,
        status=Status.RUNNING,
        status_reason="",
        created_at=0.0,
        updated_at=0.0,
    )


def inst(cid: str, slot: int, revision: int = 1, state: str = "running") -> Instance:
    return Instance(cid, f"c-{cid}", "d1", "web", revision, slot, ContainerState(state), None, None)


def test_pick_instance() -> None:
    running = [inst("aaaa1111", 1), inst("bbbb2222", 0), inst("cccc3333", 0, revision=2)]
    # default: the newest revision's lowest slot
    assert pick_instance(running, "web", None).container_id == "cccc3333"
    assert pick_instance(running, "web", "web-1").container_id == "aaaa1111"
    assert pick_instance(running, "web", "bbbb").container_id == "bbbb2222"
    with pytest.raises(NotFound, match="running: web-0, web-0, web-1"):
        pick_instance(running, "web", "web-7")
    with pytest.raises(Conflict, match="no running instance"):
        pick_instance([inst("dddd", 0, state="exited")], "web", None)
    with pytest.raises(NotFound):
        pick_instance([inst("dddd", 0, state="exited")], "web", "web-0")


VOLUMES = {"volumes": {"data": {"path": "/data", "size_gb": 1}}}


@pytest.mark.parametrize(
    ("body", "intent", "volumes", "error"),
    [
        ({}, Intent.RUN, False, None),
        ({}, Intent.STOP, False, None),  # a stopped deployment may still run a one-off
        ({}, Intent.DELETE, False, Conflict),
        ({}, Intent.RUN, True, SpecError),  # no volumes to mount
        (VOLUMES, Intent.RUN, True, None),
        ({**VOLUMES, "scale": {"min": 2, "max": 2}}, Intent.RUN, True, Conflict),
    ],
)
def test_check_runnable(
    body: dict[str, Any], intent: Intent, volumes: bool, error: type[Exception] | None
) -> None:
    target = record(body, intent)
    if error is None:
        check_runnable(target, volumes)
    else:
        with pytest.raises(error):
            check_runnable(target, volumes)


@pytest.mark.parametrize(
    ("value", "field"),
    [("env", "command"), ([], "command"), (["env", 3], "command.1"), (["a\x00"], "command.0")],
)
def test_parse_command_names_the_field(value: object, field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_command(value, "command")
    assert err.value.field == field
    assert parse_command(["sh", "-c", "exit 3"], "command") == ("sh", "-c", "exit 3")


def test_exec_sessions_attach_once_for_their_deployment_within_the_ttl() -> None:
    sessions = ExecSessions(ttl_s=60)
    token = sessions.add("d1", "exec-1", "web-0", tty=True, stdin=True)
    assert sessions.take(token, "d2") is None  # another deployment's route
    taken = sessions.take(token, "d1")
    assert taken is not None and taken.exec_id == "exec-1"
    assert sessions.take(token, "d1") is None  # once
    expired = ExecSessions(ttl_s=-1)
    token = expired.add("d1", "exec-2", "web-0", tty=False, stdin=False)
    assert expired.take(token, "d1") is None


@pytest.mark.parametrize("value", [0, 0.5, 86401, True, "10", [1]])
def test_parse_timeout_refuses(value: object) -> None:
    with pytest.raises(SpecError) as err:
        parse_timeout(value, "timeout_s")
    assert err.value.field == "timeout_s"
    assert parse_timeout(None, "timeout_s") is None and parse_timeout(60, "timeout_s") == 60.0


def test_exec_routes_are_named_routes() -> None:
    app = web.Application()
    add_routes(app)
    assert set(app.router.named_resources()) >= EXEC_ROUTES


class _LogsEngine:
    """Docker's log endpoint as the reader sees it: a follow stream that ends early."""

    def __init__(self, lines: list[tuple[str, bytes]], follow_gives: int) -> None:
        self.lines = lines
        self.follow_gives = follow_gives
        self.since: list[float | None] = []

    async def logs(
        self, container_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[tuple[str, bytes]]:
        if not follow:
            self.since.append(since)
        for i, item in enumerate(self.lines):
            if follow and i >= self.follow_gives:
                return
            yield item


def test_output_reader_catches_up_after_a_short_follow_without_repeats() -> None:
    lines = [
        ("stdout", b"2026-03-10T10:00:00.000000001Z one\n"),
        ("stderr", b"2026-03-10T10:00:00.000000002Z two\n"),
        ("stdout", b"2026-03-10T10:00:01.5Z three\n"),
    ]
    engine = _LogsEngine(lines, follow_gives=2)
    got: list[tuple[str, bytes]] = []

    async def output(stream: str, ts_ns: int, text: bytes) -> None:
        got.append((stream, text))

    async def main() -> None:
        reader = _OutputReader(engine, "c1", output)  # type: ignore[arg-type]
        await reader.follow()
        await reader.catch_up()

    asyncio.run(main())
    assert got == [("stdout", b"one\n"), ("stderr", b"two\n"), ("stdout", b"three\n")]
    assert engine.since == [pytest.approx(1773136800.000000002)]
