"""The database schema, as the forward-only list of migrations that builds it.

Entry *n* takes a database from ``user_version`` n-1 to n (patrd/state/store_base.py
runs them at open, after copying the file aside). Append; never edit a released entry.
"""

from __future__ import annotations

# Forward-only. Append; never edit a released entry.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL,
        intent TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE revisions (
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        revision INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (deployment_id, revision)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        revision INTEGER
    );
    CREATE INDEX events_by_deployment ON events (deployment_id, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: rollouts and image history.
    """
    ALTER TABLE deployments ADD COLUMN stable_revision INTEGER;
    ALTER TABLE revisions ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';
    ALTER TABLE revisions ADD COLUMN reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE revisions ADD COLUMN pinned_image TEXT;
    ALTER TABLE revisions ADD COLUMN image_id TEXT;
    ALTER TABLE revisions ADD COLUMN deployed_at REAL;
    """,
    # Managed URLs and certificate bookkeeping. The certificates
    # themselves are files (patrd/tls/certstore.py); this row keeps what must
    # survive a restart: failures, backoff and recent orders per name.
    """
    CREATE TABLE urls (
        id TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        path TEXT NOT NULL,
        deployment TEXT,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (domain, path)
    );
    CREATE INDEX urls_by_deployment ON urls (deployment);
    CREATE TABLE certificates (
        domain TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # Secrets, encrypted at rest (AES-256-GCM, patrd/state/crypto.py); volume
    # deletion chosen at delete time.
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    ALTER TABLE deployments ADD COLUMN delete_volumes INTEGER NOT NULL DEFAULT 0;
    """,
    # The autoscaler's instance count: NULL runs scale.min; it is
    # clamped to [scale.min, scale.max] when read, and is no new revision.
    """
    ALTER TABLE deployments ADD COLUMN replicas INTEGER;
    """,
    # Deploy on push: the registry time of the last push applied,
    # so duplicate and out-of-order notifications roll nothing.
    """
    ALTER TABLE deployments ADD COLUMN pushed_at REAL;
    """,
    # Scoped API tokens (only their SHA-256) and the audit log of API calls
    # (patrd/state/tokens.py).
    """
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL,
        deployments TEXT,
        created_at REAL NOT NULL,
        expires_at REAL,
        last_used_at REAL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        deployment TEXT,
        status INTEGER NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_by_at ON audit (at);
    """,
    # Images patrd pulled (pinned releases: patrd/engine/imagegc.py removes only these):
    # the image id, the reference pulled, and the revision it was pulled for.
    """
    CREATE TABLE pulled_images (
        image_id TEXT PRIMARY KEY,
        ref TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        pulled_at REAL NOT NULL
    );
    """,
    # A secret used as registry_auth is bound to that registry when first used
    # so (trust boundaries): its credentials are never sent to another host.
    """
    ALTER TABLE secrets ADD COLUMN registry TEXT;
    """,
    # Notification targets added at run time (patrd/notify/; [[notify]] in the
    # config are not stored) and the node's own events (disk.low,
    # memory.pressure, notify.failed), which belong to no deployment.
    """
    CREATE TABLE notifications (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE node_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    """,
    # Pinned releases: every revision records how it came by its image and
    # the registry digest it runs; settings changes carry both forward.
    """
    ALTER TABLE revisions ADD COLUMN origin TEXT NOT NULL DEFAULT 'create';
    ALTER TABLE revisions ADD COLUMN digest_ref TEXT;
    UPDATE revisions SET origin = 'push', digest_ref = pinned_image
        WHERE pinned_image LIKE '%@sha256:%';
    UPDATE revisions SET origin = 'revert' WHERE pinned_image LIKE 'sha256:%';
    UPDATE revisions SET origin = 'settings' WHERE pinned_image IS NULL AND revision > 1;
    """,
    # Scheduled job runs (patrd/run/jobs.py): one row per run, its output's newest
    # bytes as JSON lines; JOB_RUNS_KEPT per job are kept.
    """
    CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        job TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        exit_code INTEGER,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        log TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX job_runs_by_job ON job_runs (deployment_id, job, id);
    """,
)
