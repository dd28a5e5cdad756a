"""patrd: a self-hosted, single-node container platform."""

__version__ = "0.1.0"
