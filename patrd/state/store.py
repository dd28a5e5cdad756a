"""Desired state in SQLite (aiosqlite, WAL): the ``Store``.

Every user change is one transaction; each accepted spec change is a new
numbered revision. The Store is one object to the rest of patrd, written as
one part per table group, each a subclass of :class:`StoreBase` (the
connection, its lock, transactions; the only place that sees sqlite errors:
they leave as ``StoreError``, or ``NotFound``/``Conflict`` where they mean that):

* store_deployments.py: deployments, their intent, status and replicas
* store_releases.py: rollouts, reverts, pushes, the revision history, pulled images
* store_events.py: deployment and node events, runtime notification targets
* store_secrets.py: sealed secrets
* store_jobs.py: scheduled job runs
* store_urls.py: managed URLs and certificate state

The schema is patrd/state/migrations.py; database files (snapshots, checks
before a restore) are patrd/state/database.py; the records it returns are
patrd/model/deployment.py and patrd/model/records.py.
"""

from __future__ import annotations

from patrd.state.store_deployments import DeploymentsPart
from patrd.state.store_events import EventsPart
from patrd.state.store_jobs import JobsPart
from patrd.state.store_releases import ReleasesPart
from patrd.state.store_secrets import SecretsPart
from patrd.state.store_urls import UrlsPart


class Store(DeploymentsPart, ReleasesPart, EventsPart, SecretsPart, JobsPart, UrlsPart):
    """One connection; aiosqlite serialises calls on its own thread."""
