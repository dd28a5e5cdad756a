"""Limits of the public API that both the handlers and the OpenAPI document state.

Pure data: the API checks a request against these and the document
(patrd/api/openapi*.py) publishes the same numbers, so the two cannot drift.
"""

from __future__ import annotations

EVENTS_DEFAULT_LIMIT = 100
EVENTS_MAX_LIMIT = 1000
