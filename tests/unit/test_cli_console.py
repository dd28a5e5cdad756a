"""patrctl speaks the user's language: flags in errors, image refs, secrets, prompts, verbs."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from patrd import __version__
from patrd.cli import deployments
from patrd.cli.args import create_body, update_body
from patrd.cli.client import ApiError, CliError, UsageError
from patrd.cli.main import main, parse_args
from patrd.cli.output import deployment_fields, deployments_table, event_line
from patrd.cli.words import error_line, flag_for, split_image, suggest
from patrd.model.errors import SpecError
from patrd.model.spec import parse_create, parse_update


def api_words(argv: list[str]) -> str:
    """Build the create body from argv, validate it as the API does, say the error as the CLI."""
    body = create_body(parse_args(argv))
    with pytest.raises(SpecError) as info:
        parse_create(body, region="local")
    return error_line(info.value.message, info.value.field)


# --- errors name the flag --------------------------------------------------------


def test_port_out_of_range_names_the_flag() -> None:
    line = api_words(["create", "web", "--image", "nginx", "--port", "99999"])
    assert line == "patrctl: --port 99999: port must be a number from 1 to 65535"
    assert "field:" not in line


def test_env_name_error_has_no_regex() -> None:
    line = api_words(["create", "web", "--image", "nginx", "--port", "80", "--env", "1X=a"])
    assert line.startswith("patrctl: --env 1X: a variable name is letters, digits and '_'")
    assert "[" not in line


def test_scale_and_resources_fields_become_flags() -> None:
    line = api_words(
        ["create", "web", "--image", "nginx", "--port", "80", "--min", "3", "--max", "2"]
    )
    assert line == "patrctl: --max: must be at least --min (3)"
    line = api_words(["create", "web", "--image", "nginx", "--port", "80", "--memory-mb", "1"])
    assert line.startswith("patrctl: --memory-mb: must be from")
    refused = ApiError(
        422,
        "invalid",
        "this node has 2 CPUs; one instance can use at most 2 (asked for 8)",
        "resources.cpu",
    )
    assert refused.line() == (
        "patrctl: --cpu: this node has 2 CPUs; one instance can use at most 2 (asked for 8)"
    )


def test_unknown_field_keeps_the_path() -> None:
    assert ApiError(422, "invalid", "bad", "security.pids_limit").line() == (
        "patrctl: bad (field: security.pids_limit)"
    )
    assert flag_for("startup_probe.period_s") == "--probe-period"
    assert flag_for("liveness_probe.path") == "--liveness-probe"
    assert flag_for("env.DB.secret") == "--env DB"


# --- images as docker writes them ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("nginx", (None, "nginx", None, None)),
        ("nginx:1.27", (None, "nginx", "1.27", None)),
        ("library/nginx:1.27", (None, "library/nginx", "1.27", None)),
        ("ghcr.io/org/app:v2", ("ghcr.io", "org/app", "v2", None)),
        ("localhost:5000/app", ("localhost:5000", "app", None, None)),
        ("localhost:5000/app:3", ("localhost:5000", "app", "3", None)),
        ("app@sha256:abc", (None, "app", None, "sha256:abc")),
    ],
)
def test_split_image(text: str, parts: tuple[Any, ...]) -> None:
    assert split_image(text) == parts


def test_create_accepts_repo_colon_tag() -> None:
    body = create_body(parse_args(["create", "web", "--image", "nginx:1.27", "--port", "80"]))
    assert (body["image"], body["tag"]) == ("nginx", "1.27")
    assert "registry" not in body
    parse_create(body, region="local")  # the API accepts it
    body = create_body(
        parse_args(["create", "web", "--image", "ghcr.io/org/app:v2", "--port", "80"])
    )
    assert (body["registry"], body["image"], body["tag"]) == ("ghcr.io", "org/app", "v2")


def test_image_tag_conflicts_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--tag says '2'"):
        create_body(
            parse_args(["create", "web", "--image", "nginx:1", "--tag", "2", "--port", "80"])
        )
    # A digest is checked and pinned by create (tests/unit/test_cli_digest.py).


# --- secrets in --env, and show ----------------------------------------------------


def test_env_secret_reference_in_create_and_update() -> None:
    args = parse_args(
        ["create", "web", "--image", "nginx", "--port", "80", "--env", "DB=secret:db-pass"]
    )
    body = create_body(args)
    assert body["env"] == {"DB": {"secret": "db-pass"}}
    spec = parse_create(body, region="local")
    current = spec.to_json()
    args = parse_args(["update", "web", "--env", "TOKEN=secret:api", "--env", "A=plain"])
    patch = update_body(args, current)
    assert patch["env"] == {"DB": {"secret": "db-pass"}, "TOKEN": {"secret": "api"}, "A": "plain"}
    parse_update(spec, patch)


def test_show_marks_secret_env_vars() -> None:
    d = {
        "id": "d1",
        "name": "web",
        "revision": 1,
        "status": "running",
        "status_reason": "",
        "intent": "run",
        "created_at": "x",
        "updated_at": "x",
        "spec": {
            "image": "nginx",
            "tag": "1",
            "ports": {"80": "http"},
            "env": {"DB": {"secret": "db-pass"}, "A": "1"},
            "scale": {"min": 1, "max": 1},
            "resources": {"cpu": 0.5, "memory_mb": 256},
        },
    }
    env = dict(deployment_fields(d))["env"]
    assert env == "A, DB (secret db-pass) (values: --json)"


# --- status and events read cleanly --------------------------------------------------


def test_list_shows_why_a_deployment_errored() -> None:
    base = {
        "revision": 1,
        "intent": "run",
        "spec": {"image": "x", "tag": "1", "scale": {"min": 1, "max": 1}},
        "instances": [],
    }
    reason = "crash loop: instance 0 failed to start 3 times (last: exited with code 3)"
    table = deployments_table(
        [
            {**base, "name": "bad", "status": "errored", "status_reason": reason},
            {**base, "name": "ok", "status": "deploying", "status_reason": "0/1 instances ready"},
        ]
    )
    bad, ok = table.splitlines()[1:]
    assert "errored (crash loop: instance 0 failed to start 3 time...)" in bad
    assert "deploying" in ok and "instances ready" not in ok


def test_event_lines_do_not_repeat_words() -> None:
    at = "2024-05-01T10:00:00.000Z"
    status = {"at": at, "kind": "status", "message": "status running", "revision": 2}
    assert event_line(status) == f"{at}  status   running (revision 2)"
    updated = {"at": at, "kind": "updated", "message": "revision 2", "revision": 2}
    assert event_line(updated) == f"{at}  updated  revision 2"


# --- small conventions ---------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"patrctl {__version__}"


def test_did_you_mean_for_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lst"]) == 2
    err = capsys.readouterr().err
    assert "unknown verb 'lst'; did you mean 'list'?" in err
    assert main(["secret", "delet", "x"]) == 2
    assert "unknown action 'delet'; did you mean 'delete'?" in capsys.readouterr().err
    assert suggest("zzzzzz", ["list", "show"]) is None


def test_bad_flag_prints_that_verbs_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", "web", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: patrctl create")
    assert "unrecognized arguments: --bogus" in err
    assert main(["secret", "show", "x", "--nope"]) == 2
    assert capsys.readouterr().err.startswith("usage: patrctl secret show")


def test_delete_without_confirm_off_a_terminal_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["--socket", "/nonexistent", "delete", "web"]) == 2
    assert capsys.readouterr().err == (
        "patrctl: deleting is permanent; repeat the name: --confirm web\n"
    )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_delete_prompts_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdin", _Tty("web\n"))
    assert deployments._confirm_delete("web", None) == "web"
    assert "Type its name to confirm" in err.getvalue()
    monkeypatch.setattr(sys, "stdin", _Tty("wbe\n"))
    with pytest.raises(CliError, match="not deleted"):
        deployments._confirm_delete("web", None)
    assert deployments._confirm_delete("web", "web") == "web"  # --confirm: no prompt


def test_config_rm_is_also_delete() -> None:
    assert parse_args(["config", "delete", "web", "app.toml"]).config_verb == "delete"
    assert parse_args(["config", "rm", "web", "app.toml"]).config_verb == "rm"


def test_token_delete_is_revoke() -> None:
    assert parse_args(["token", "delete", "ci"]).token_verb == "delete"
    assert parse_args(["token", "revoke", "ci"]).token_verb == "revoke"
