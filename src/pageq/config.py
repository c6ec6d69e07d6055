"""Where the database is: the DSN argument, then PAGEQ_DSN, then DATABASE_URL, then the embedded server."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pageq.store import embedded
from pageq.store.transport import secure_dsn

log = logging.getLogger("pageq")

DEFAULT_SCHEMA = "pageq"


@dataclass(frozen=True)
class Database:
    """A resolved database: its DSN and a one-line description safe to print (no password).

    ``pooled``: the DSN leads to a pooler in transaction mode (PgBouncer), where a session outlives no
    transaction: no server-side prepared statements, and LISTEN only over ``listen_dsn``, a direct
    connection to the server (without one, workers poll).
    """

    dsn: str = field(repr=False)  # may hold a password
    label: str
    embedded: bool
    pooled: bool = False
    listen_dsn: str | None = None

    def __repr__(self) -> str:  # the DSNs may hold passwords
        return f"Database({self.label!r}, pooled={self.pooled})"

    @property
    def listen_target(self) -> str | None:
        """Where to LISTEN: the direct DSN, or the main one unless it is pooled (None: poll only)."""
        return self.listen_dsn or (None if self.pooled else self.dsn)


def home() -> Path:
    """The folder of the embedded server: ``$PAGEQ_HOME`` or ``./.pageq``."""
    return Path(os.environ.get("PAGEQ_HOME") or ".pageq")


def mask(dsn: str) -> str:
    """The DSN without its password."""
    if "://" not in dsn:
        return " ".join(p for p in dsn.split() if not p.startswith("password="))
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def configured_dsn(explicit: str | None = None) -> tuple[str, str] | None:
    """(dsn, where it came from) when one is configured, else None."""
    for source, value in (
        ("argument", explicit),
        ("PAGEQ_DSN", os.environ.get("PAGEQ_DSN")),
        ("DATABASE_URL", os.environ.get("DATABASE_URL")),
    ):
        if value:
            return value, source
    return None


def flag(name: str) -> bool:
    """A boolean environment variable: 1, true, yes or on (any case) is true."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def resolve(
    explicit: str | None = None, *, pooled: bool | None = None, listen_dsn: str | None = None
) -> Database:
    """Resolve the database, starting the embedded server when nothing is configured.

    ``pooled`` and ``listen_dsn`` default to ``PAGEQ_POOLED`` and ``PAGEQ_LISTEN_DSN``.
    """
    found = configured_dsn(explicit)
    if found is not None:
        dsn, source = found
        label = f"{mask(dsn)} (from {source})"
        dsn, warning = secure_dsn(dsn)
        if warning:
            log.warning("%s", warning)
        listen = listen_dsn or os.environ.get("PAGEQ_LISTEN_DSN") or None
        if listen is not None:
            listen, warning = secure_dsn(listen)
            if warning:
                log.warning("LISTEN connection: %s", warning)
        return Database(
            dsn=dsn,
            label=label,
            embedded=False,
            pooled=flag("PAGEQ_POOLED") if pooled is None else pooled,
            listen_dsn=listen,
        )
    folder = home()
    dsn = embedded.start(folder)
    return Database(dsn=dsn, label=f"embedded PostgreSQL in {folder}/pgdata", embedded=True)


def schema_name(explicit: str | None = None) -> str:
    return explicit or os.environ.get("PAGEQ_SCHEMA") or DEFAULT_SCHEMA


def embedded_start() -> str:
    """Start the embedded server in `home()` (or join it) and return its DSN."""
    return embedded.start(home())


def embedded_stop() -> bool:
    """Stop the embedded server; False when it was not running."""
    return embedded.stop(home())


def embedded_status() -> embedded.EmbeddedStatus:
    """Whether the embedded server runs, its data folder, pid and DSN."""
    return embedded.status(home())
