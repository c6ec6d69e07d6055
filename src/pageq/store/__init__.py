"""The store: the only code that reads `pageq/sql` or imports psycopg. Not public API."""

from pageq.store.engine import Listener, Session, Store
from pageq.store.migrate import MigrationStatus

__all__ = ["Listener", "MigrationStatus", "Session", "Store"]
