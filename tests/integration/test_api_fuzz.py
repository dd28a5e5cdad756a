"""The API fuzzed from its own OpenAPI document (schemathesis) against a real daemon.

Every operation gets a few generated requests, valid and invalid, and a
stateful run follows the document's ``links`` (create a deployment, then its
``{name}`` operations; create a URL, then its ``{id}`` operations; alike for
secrets). Every answer must be documented: no 5xx, a documented status code,
a documented content type, a body matching its schema.

The generated create bodies are steered to what this machine can run without
the internet: the local test image (no pull), a small scale and resources, a
``fz-`` name prefix so the test can clean up after itself.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import DataGenerationMethod
from schemathesis.checks import ALL_CHECKS
from schemathesis.exceptions import SkipTest
from schemathesis.specs.openapi.checks import ignored_auth

from tests.support.daemon import Daemon, free_port

ADMIN = "fuzz-admin-token-0123456789abcdef"
PREFIX = "fz-"
# Streams and upgrades: a generated request would hold the connection open.
SKIPPED = {"attach_exec", "logs"}
SLOW_NEGATIVE = {
    "update_deployment",
    "update_url",
    "put_secret",
    "put_config_file",
    "revert_by_ref",
    "restore_backup",
    "create_exec",
    "run_oneoff",
}
TIMEOUT_S = 15
# schemathesis 3 touches jsonschema's deprecated names.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CHECKS = tuple(c for c in ALL_CHECKS if c is not ignored_auth)


@pytest.fixture
def site(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[str]:
    port = free_port()
    (tmp_path / "token").write_text(ADMIN + "\n")
    daemon = Daemon(
        tmp_path,
        config={"api": {"tcp_listen": f"127.0.0.1:{port}", "token_file": str(tmp_path / "token")}},
    )
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v1/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(daemon.log_tail()) from None
                time.sleep(0.05)
        yield base
    finally:
        daemon.stop()
        names.extend(_created(tmp_path))


class _Skipped:
    """Stands for the answer of an operation the fuzzer does not call."""

    status_code = 0


def _created(workdir: Path) -> list[str]:
    """Every fz- deployment name the daemon logged, for force_cleanup."""
    log = (workdir / "patrd.log").read_text(errors="replace")
    return sorted(set(re.findall(rf"\b({PREFIX}[a-z0-9-]+)", log)))


def _steer(body: Any, counter: list[int]) -> Any:
    """Keep a generated create body runnable here; invalid bodies stay as generated."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return body
    counter[0] += 1
    body["name"] = f"{PREFIX}{counter[0]}-{int(time.monotonic() * 1000) % 100000}"
    body["image"] = "patrd-test/web"
    body["tag"] = "v1"
    body["registry"] = "docker.io"
    body["ports"] = {"80": "http"}
    body.pop("volumes", None)
    body.pop("startup_probe", None)
    body.pop("liveness_probe", None)
    body.pop("registry_auth", None)
    body["scale"] = {"min": 1, "max": 1}
    body["resources"] = {"cpu": 0.25, "memory_mb": 64}
    return body


def _schema(base: str) -> Any:
    """The document as the daemon serves it."""
    request = urllib.request.Request(
        f"{base}/v1/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        document = json.loads(resp.read())
    return schemathesis.from_dict(document, base_url=base)


class Tally:
    """What the fuzzer did: operations reached (by id), requests made, failures."""

    def __init__(self) -> None:
        self.reached: set[str] = set()
        self.statuses: dict[str, set[int]] = {}
        self.linked: dict[str, set[int]] = {}
        self.examples = 0
        self.failures: list[str] = []
        self.counter = [0]

    def call(self, case: Any, steer: bool = True) -> Any:
        op_id = case.operation.definition.raw["operationId"]
        if op_id == "create_deployment" and steer:
            case.body = _steer(case.body, self.counter)
        # The API takes no header parameters: generated ones would only exercise
        # aiohttp's HTTP parser (a plain-text 400 before any handler runs).
        case.headers = {"Authorization": f"Bearer {ADMIN}"}
        self.examples += 1
        print(f"fuzz> {time.monotonic():.1f} {op_id} {case.method} {case.formatted_path}")
        response = case.call(timeout=TIMEOUT_S)
        self.reached.add(op_id)
        self.statuses.setdefault(op_id, set()).add(response.status_code)
        return response


FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _each_operation(schema: Any, tally: Tally) -> None:
    """A few generated requests per operation, valid and invalid ones."""
    for result in schema.get_all_operations():
        operation = result.ok()
        op_id = operation.definition.raw["operationId"]
        if op_id in SKIPPED:
            continue
        # Invalid bodies too, except where Hypothesis spends a minute per operation
        # rejecting candidates it cannot negate (measured: 40-80 s each; the
        # linked phase still sends these operations generated valid bodies).
        methods = [DataGenerationMethod.positive]
        if "requestBody" in operation.definition.raw and op_id not in SLOW_NEGATIVE:
            methods.append(DataGenerationMethod.negative)
        for method in methods:
            strategy = operation.as_strategy(data_generation_method=method)

            @settings(FUZZ_SETTINGS, max_examples=3)
            @hypothesis.given(case=strategy)
            def one(case: Any) -> None:
                case.validate_response(tally.call(case), checks=CHECKS)

            try:
                one()
            except (SkipTest, hypothesis.errors.Unsatisfiable):
                pass  # nothing invalid to send
            except Exception as exc:
                tally.failures.append(f"{op_id} ({method.name}): {str(exc)[:1500]}")


def _seeds() -> dict[str, dict[str, Any]]:
    """One valid create per resource with links: what the linked operations act on."""
    name = f"{PREFIX}link-{int(time.monotonic() * 1000) % 100000}"
    return {
        "/v1/deployments": {
            "name": name,
            "image": "patrd-test/web",
            "tag": "v1",
            "ports": {"80": "http"},
            "resources": {"cpu": 0.25, "memory_mb": 64},
            "deploy_on_create": False,
            "env": {"GREETING": "hi"},
            "jobs": {"tick": {"schedule": "@daily", "command": ["true"]}},
        },
        "/v1/secrets": {"name": f"{name}-secret", "value": "s3cret"},
        "/v1/urls": {"domain": f"{name}.example.test", "target": {"deployment": name, "port": 80}},
        "/v1/tokens": {"name": f"{name}-token", "scope": "read"},
        # A webhook to a closed loopback port: a test delivery fails, nothing leaves.
        "/v1/notifications": {
            "name": f"{name}-hook",
            "type": "webhook",
            "url": "http://127.0.0.1:9/",
        },
    }


def _linked_test(operation: Any, tally: Tally, values: dict[str, Any]) -> Any:
    """A few generated requests to ``operation`` about the created resource.

    ``values`` are the link's parameters: a bare name is a path parameter,
    ``query.NAME`` a query parameter.
    """
    path = {k: v for k, v in values.items() if "." not in k}
    query = {k.removeprefix("query."): v for k, v in values.items() if k.startswith("query.")}

    @settings(FUZZ_SETTINGS, max_examples=3)
    @hypothesis.given(case=operation.as_strategy())
    def one(case: Any) -> None:
        case.path_parameters = {**(case.path_parameters or {}), **path}
        if query:
            case.query = {**(case.query or {}), **query}
        answer = tally.call(case)
        op_id = case.operation.definition.raw["operationId"]
        tally.linked.setdefault(op_id, set()).add(answer.status_code)
        case.validate_response(answer, checks=CHECKS)

    return one


def _follow_links(schema: Any, tally: Tally) -> None:
    """Create one of each resource, then fuzz every operation its 201 links to.

    The parameters the link names come from the created resource as the link
    says (``$response.body#/name``); the rest of each request is generated.
    Deletions run last, newest resource first, so every other operation
    meets resources that exist (a URL's deployment too).
    """
    created = []
    for path, body in _seeds().items():
        create = schema[path]["POST"]
        case = create.make_case(body=body)
        response = tally.call(case, steer=False)
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == 201, (path, response.status_code, response.text)
        created.append((create, response.json()))
    later = []
    for create, resource in created:
        for link in create.definition.raw["responses"]["201"]["links"].values():
            if link["operationId"] in SKIPPED:
                continue
            if link["operationId"].startswith(("delete", "revoke")):
                later.append((link, resource))
            else:
                _follow(schema, tally, link, resource)
    for link, resource in reversed(later):
        _follow(schema, tally, link, resource)


def _follow(schema: Any, tally: Tally, link: dict[str, Any], resource: dict[str, Any]) -> None:
    op_id = link["operationId"]
    values = {
        param: resource[expression.removeprefix("$response.body#/")]
        for param, expression in link["parameters"].items()
    }
    one = _linked_test(schema.get_operation_by_id(op_id), tally, values)
    try:
        one()
    except Exception as exc:
        tally.failures.append(f"{op_id} (linked): {str(exc)[:1500]}")


def _stateful(schema: Any, tally: Tally) -> None:
    """Chains along the links: create, then act on what was created."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def call(self, case: Any, **kwargs: Any) -> Any:
            if case.operation.definition.raw["operationId"] in SKIPPED:
                return _Skipped()
            return tally.call(case)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # Collected, not raised: a replay of a stateful run meets a changed
            # daemon, which Hypothesis reports as flaky instead of the finding.
            if isinstance(response, _Skipped):
                return
            try:
                case.validate_response(response, checks=CHECKS)
            except AssertionError as exc:
                op_id = case.operation.definition.raw["operationId"]
                tally.failures.append(f"{op_id} (stateful): {str(exc)[:1500]}")

    try:
        run_state_machine_as_test(
            Workflow, settings=settings(FUZZ_SETTINGS, max_examples=15, stateful_step_count=5)
        )
    except Exception as exc:
        tally.failures.append(f"stateful: {str(exc)[:3000]}")


def test_every_operation_answers_as_documented(site: str) -> None:
    schema = _schema(site)
    tally = Tally()
    started = time.monotonic()
    _each_operation(schema, tally)
    _follow_links(schema, tally)
    _stateful(schema, tally)
    operations = {
        op["operationId"]
        for item in schema.raw_schema["paths"].values()
        for key, op in item.items()
        if key != "parameters"
    }
    print(
        f"fuzz: {len(tally.reached)}/{len(operations)} operations reached, "
        f"{tally.examples} requests in {time.monotonic() - started:.0f} s; "
        f"not reached: {sorted(operations - tally.reached)}"
    )
    print("fuzz statuses:", {k: sorted(v) for k, v in sorted(tally.statuses.items())})
    print("fuzz linked:", {k: sorted(v) for k, v in sorted(tally.linked.items())})
    linked = {
        link["operationId"]
        for item in schema.raw_schema["paths"].values()
        for key, op in item.items()
        if key != "parameters"
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    }
    assert set(tally.linked) == linked - SKIPPED  # every link followed to a real resource
    assert not tally.failures, "\n\n".join(tally.failures)
    assert operations - tally.reached == SKIPPED
