"""Config sections declared once: dataclass fields carry their TOML key's check and doc.

A section is a frozen dataclass whose fields are declared with :func:`setting`
(the default, the :data:`~patrd.model.checks.Check` that parses a TOML value,
a one-line doc). :func:`load_section` walks those fields: unknown keys are
refused (listing the known ones), each present key is checked, absent keys keep
their default, and then the section's own ``validate()`` (if any) checks what
spans several keys. Fields declared without :func:`setting` are not TOML keys
(runtime values such as the proxy's ``forwarded_share``). A field declared with
:func:`flattened` is a sub-section whose keys sit in the same TOML table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from patrd.model.checks import DEFAULT, Check, reject_unknown, table_at
from patrd.model.errors import ConfigError

T = TypeVar("T")

_CHECK = "check"
_DOC = "doc"
_FLAT = "flattened"


def setting(
    default: Any = MISSING,
    check: Check | None = None,
    doc: str = "",
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A field that is a TOML key: its default (or ``factory``), check and doc."""
    if check is None or not doc:
        raise TypeError("a setting needs a check and a one-line doc")
    metadata = {_CHECK: check, _DOC: doc}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flattened(cls: type[Any]) -> Any:
    """A sub-section field whose keys sit in the parent's TOML table."""
    return field(default_factory=cls, metadata={_FLAT: cls})


def keys(cls: type[Any]) -> Iterator[tuple[str, Field[Any]]]:
    """(TOML key, field) of every setting of a section, flattened ones included."""
    for f in fields(cls):
        if _FLAT in f.metadata:
            yield from keys(f.metadata[_FLAT])
        elif _CHECK in f.metadata:
            yield f.name, f


def doc(f: Field[Any]) -> str:
    return str(f.metadata[_DOC])


def override(section: T, name: str, value: Any, flag: str, base_dir: Path) -> T:
    """``section`` with ``name`` set from a command-line ``flag``, checked as in a file."""
    check = dict(keys(type(section)))[name].metadata[_CHECK]
    parsed = check(value, flag, base_dir)
    return section if parsed is DEFAULT else replace(section, **{name: parsed})  # type: ignore[type-var]


def load_section(cls: type[T], raw: Mapping[str, Any], name: str, base_dir: Path) -> T:
    """``[name]`` of the config file as ``cls``; relative paths are relative to ``base_dir``."""
    table = table_at(raw.get(name, {}), name)
    reject_unknown(table, {key for key, _ in keys(cls)}, f"{name}.", ConfigError)
    return _build(cls, table, f"{name}.", base_dir)


def _build(cls: type[T], table: Mapping[str, Any], prefix: str, base_dir: Path) -> T:
    assert is_dataclass(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if _FLAT in f.metadata:
            values[f.name] = _build(f.metadata[_FLAT], table, prefix, base_dir)
        elif _CHECK in f.metadata and f.name in table:
            value = f.metadata[_CHECK](table[f.name], prefix + f.name, base_dir)
            if value is not DEFAULT:
                values[f.name] = value
    section = cls(**values)
    validate = getattr(section, "validate", None)
    if validate is not None:
        validate()
    return section
