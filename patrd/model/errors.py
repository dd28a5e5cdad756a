"""The patrd error tree.

Foreign exceptions (aiodocker, sqlite, OS) are translated into these at the
module that sees them, with ``raise ... from exc``; the API maps each class to
one HTTP status in one table.

    PatrdError
    ├── ConfigError      bad config file or flag (names the key)
    ├── SpecError        bad user input (names the field path)  → 422
    ├── BadRequest       malformed request (JSON, query)        → 400
    ├── NotFound         no such object                          → 404
    ├── Conflict         state forbids the change                → 409
    ├── EngineError      Docker engine failed or is unreachable  → 502/503
    └── StoreError       the database refused a write            → 503
"""

from __future__ import annotations


class PatrdError(Exception):
    """Base of every error patrd raises on purpose."""


class ConfigError(PatrdError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config: {key}: {message}")
        self.key = key
        self.message = message


class SpecError(PatrdError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BadRequest(PatrdError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFound(PatrdError):
    pass


class Conflict(PatrdError):
    pass


class EngineError(PatrdError):
    pass


class ImageNotFound(EngineError):
    pass


class PullRefused(ImageNotFound):
    """A pull was needed but the disk guard refused it (patrd/engine/diskguard.py)."""


class StoreError(PatrdError):
    pass
