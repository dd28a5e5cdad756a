"""The validator kit: type checks for decoded JSON/TOML that name the field they refuse.

Every parser of user input (deployment specs, URLs, the daemon's config)
builds on these, so a wrong type reads the same everywhere: the field's full
path, then what it must be. The ``*_at`` functions check one value and raise
``err`` (a :class:`SpecError` for API input, a :class:`ConfigError` for the
config file); the lower-case factories below them (``integer(1)``,
``positive()``, ...) build the config file's :data:`Check` functions that
:mod:`patrd.model.sections` declarations name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final

from patrd.model.errors import ConfigError, PatrdError, SpecError
from patrd.model.listen import Listen, parse_listen

# How a check reports a refused value: SpecError (API input) or ConfigError (config file).
Error = Callable[[str, str], PatrdError]
# A config check: (TOML value, full key such as "proxy.http_listen", config file's
# directory) → the parsed value, or DEFAULT to keep the field's default.
Check = Callable[[Any, str, Path], Any]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()  # a check's answer for "as if the key were absent" ("" paths)

# A DNS label (also what a region may be); as patrd.model.spec.NAME_RE.
LABEL_RE: Final = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

_UNKNOWN: Final[dict[Error, str]] = {
    SpecError: "unknown field; allowed",
    ConfigError: "unknown key; known",
}


def object_at(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be a JSON object")
    return value


def table_at(value: Any, path: str) -> Mapping[str, Any]:
    """A TOML table (``[section]``)."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, "must be a table")
    return value


def reject_unknown(
    obj: Mapping[str, Any], allowed: Collection[str], prefix: str, err: Error = SpecError
) -> None:
    """Refuse the first key not in ``allowed``, listing what is."""
    for key in obj:
        if key not in allowed:
            raise err(f"{prefix}{key}", f"{_UNKNOWN[err]}: {', '.join(sorted(allowed))}")


def str_at(value: Any, path: str, err: Error = SpecError) -> str:
    if not isinstance(value, str):
        raise err(path, "must be a string")
    return value


def bool_at(value: Any, path: str, err: Error = SpecError) -> bool:
    if not isinstance(value, bool):
        raise err(path, "must be true or false")
    return value


def int_at(value: Any, path: str, err: Error = SpecError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(path, "must be an integer")
    return int(value)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return not isinstance(value, bool) and isinstance(value, int | float)


def list_at(value: Any, path: str, err: Error = SpecError) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise err(path, "must be a list")
    return list(value)


def domain_at(value: Any, path: str, err: Error = SpecError) -> str:
    """A DNS domain name, lower-cased, without the trailing dot."""
    domain = str_at(value, path, err).strip().rstrip(".").lower()
    labels = domain.split(".")
    if not domain or len(domain) > 200 or not all(LABEL_RE.fullmatch(label) for label in labels):
        raise err(path, f"{value!r} is not a DNS domain name")
    return domain


def path_at(value: Any, path: str, base_dir: Path) -> Path | None:
    """A file path; relative ones are relative to ``base_dir``; "" is None."""
    if value == "":
        return None
    found = Path(str_at(value, path, ConfigError))
    return found if found.is_absolute() else (base_dir / found).resolve()


# --- config checks (ConfigError) ---------------------------------------------------


def boolean() -> Check:
    return lambda value, key, _: bool_at(value, key, ConfigError)


def text() -> Check:
    return lambda value, key, _: str_at(value, key, ConfigError)


def integer(minimum: int, maximum: int | None = None) -> Check:
    def check(value: Any, key: str, _: Path) -> int:
        number = int_at(value, key, ConfigError)
        if number < minimum:
            raise ConfigError(key, f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise ConfigError(key, f"must be at most {maximum}")
        return number

    return check


def positive() -> Check:
    """A number > 0 (seconds, mostly)."""

    def check(value: Any, key: str, _: Path) -> float:
        if not is_number(value) or value <= 0:
            raise ConfigError(key, "must be a positive number")
        return float(value)

    return check


def off_or_number() -> Check:
    """A number >= 0, where 0 turns the thing off."""

    def check(value: Any, key: str, _: Path) -> float:
        if not is_number(value) or value < 0:
            raise ConfigError(key, "must be a number >= 0 (0: off)")
        return float(value)

    return check


def number_in(low: float, high: float) -> Check:
    def check(value: Any, key: str, _: Path) -> float:
        if not is_number(value) or not low <= value <= high:
            raise ConfigError(key, f"must be a number from {low:g} to {high:g}")
        return float(value)

    return check


def choice(options: tuple[str, ...]) -> Check:
    def check(value: Any, key: str, _: Path) -> str:
        if str_at(value, key, ConfigError) not in options:
            raise ConfigError(key, f"must be one of {', '.join(options)}")
        return str(value)

    return check


def file_path() -> Check:
    """A path, relative to the config file's directory; "" keeps the default."""

    def check(value: Any, key: str, base_dir: Path) -> Path | object:
        found = path_at(value, key, base_dir)
        return DEFAULT if found is None else found

    return check


def listen(*, optional: bool = False) -> Check:
    """``host:port``; with ``optional``, "" is None."""

    def check(value: Any, key: str, _: Path) -> Listen | None:
        value = str_at(value, key, ConfigError)
        if optional and not value:
            return None
        return parse_listen(value, key)

    return check


def listens(empty: str | None = None) -> Check:
    """A list of ``host:port``; ``empty``: refuse a non-list or empty list with this."""

    def check(value: Any, key: str, _: Path) -> tuple[Listen, ...]:
        if empty is not None and (not isinstance(value, list) or not value):
            raise ConfigError(key, empty)
        return tuple(
            parse_listen(str_at(v, f"{key}[{i}]", ConfigError), f"{key}[{i}]")
            for i, v in enumerate(list_at(value, key, ConfigError))
        )

    return check


def networks(*, as_text: bool = False) -> Check:
    """A list of addresses or CIDR networks ("10.0.0.0/8", "2001:db8::1")."""

    def check(value: Any, key: str, _: Path) -> tuple[Any, ...]:
        found = []
        for i, item in enumerate(list_at(value, key, ConfigError)):
            at = f"{key}[{i}]"
            try:
                found.append(ipaddress.ip_network(str_at(item, at, ConfigError), strict=False))
            except ValueError:
                raise ConfigError(at, f"{item!r} is not an IP address or network") from None
        return tuple(str(n) for n in found) if as_text else tuple(found)

    return check


def addresses() -> Check:
    """A list of IP addresses (no networks)."""

    def check(value: Any, key: str, _: Path) -> tuple[str, ...]:
        found = []
        for i, item in enumerate(list_at(value, key, ConfigError)):
            at = f"{key}[{i}]"
            try:
                found.append(str(ipaddress.ip_address(str_at(item, at, ConfigError))))
            except ValueError:
                raise ConfigError(at, "must be an IP address") from None
        return tuple(found)

    return check


def ports() -> Check:
    def check(value: Any, key: str, _: Path) -> tuple[int, ...]:
        found = []
        for i, item in enumerate(list_at(value, key, ConfigError)):
            if not is_number(item) or not isinstance(item, int) or not 1 <= item <= 65535:
                raise ConfigError(f"{key}[{i}]", "must be a port number 1..65535")
            found.append(item)
        return tuple(found)

    return check


def domain() -> Check:
    return lambda value, key, _: domain_at(value, key, ConfigError)


def domains() -> Check:
    def check(value: Any, key: str, _: Path) -> tuple[str, ...]:
        items = list_at(value, key, ConfigError)
        return tuple(domain_at(v, f"{key}[{i}]", ConfigError) for i, v in enumerate(items))

    return check
