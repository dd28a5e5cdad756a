"""Every config key is declared once (patrd/model/sections.py) and documented.

The docs are checked against the declarations rather than generated from
them: config.example.toml and the README's table carry prose, examples and
grouping that one-line docs cannot, so these tests keep the hand-written
reference complete (every declared key in config.example.toml) and honest
(every key the README's table names exists).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from patrd.model.errors import ConfigError
from patrd.model.sections import doc, keys, load_section
from patrd.settings.config import Config, parse

ROOT = Path(__file__).resolve().parents[2]
OWN_PARSERS = {"security", "notify"}  # parsed by patrd/engine/cap_policy.py, notify/config.py


def _sections() -> dict[str, type[Any]]:
    return {n: t for n, t in get_type_hints(Config).items() if n not in OWN_PARSERS}


def _declared() -> set[str]:
    return {f"{name}.{key}" for name, kind in _sections().items() for key, _ in keys(kind)}


def test_every_setting_has_a_one_line_doc() -> None:
    for name, kind in _sections().items():
        for key, f in keys(kind):
            assert doc(f) and "\n" not in doc(f), f"{name}.{key}"


def test_absent_keys_keep_the_declared_defaults() -> None:
    for name, kind in _sections().items():
        assert load_section(kind, {}, name, Path("/")) == kind(), name


def test_unknown_keys_are_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse({"logs": {"retention": 1}}, base_dir=Path("/"))
    assert err.value.key == "logs.retention"
    assert err.value.message == (
        "unknown key; known: keep_bytes_per_instance, keep_bytes_total, retention_s"
    )
    with pytest.raises(ConfigError) as err:
        parse({"backup": {"keep_everything": True}}, base_dir=Path("/"))
    assert "keep_last" in err.value.message  # flattened retention keys count as known


def test_runtime_fields_are_not_keys() -> None:
    from patrd.proxy.options import ProxyOptions

    declared = {key for key, _ in keys(ProxyOptions)}
    assert "forwarded_share" not in declared
    assert {f.name for f in fields(ProxyOptions)} - declared == {
        "forwarded_share",
        "upstream_connect_timeout_s",
        "upstream_idle_pool_size",
    }
    with pytest.raises(ConfigError, match="unknown key"):
        parse({"proxy": {"forwarded_share": 2}}, base_dir=Path("/"))


def test_the_example_config_is_valid_and_names_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    parse(tomllib.loads(text), base_dir=ROOT)
    named: set[str] = set()
    section = None
    for line in text.splitlines():
        if header := re.match(r"^#?\s*\[\[?([a-z_]+)\]\]?\s*$", line):
            section = header.group(1)
        elif (key := re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)) and section:
            named.add(f"{section}.{key.group(1)}")
    assert not _declared() - named, "declared but not in config.example.toml"


def test_the_readme_table_names_only_real_keys() -> None:
    text = (ROOT / "README.md").read_text()
    table = text.split("### Configuration", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        section = ""
        for token in re.findall(r"`([a-z_0-9.]+)`", row.split("|")[1]):
            section, _, key = token.rpartition(".") if "." in token else (section, "", token)
            named.add(f"{section}.{key}")
    assert len(named) > 50
    assert not named - _declared(), "named in the README but not a key"
