"""Print the schema the migrations build, for src/pageq/sql/schema.sql.

Usage: ``python scripts/dump_schema.py > src/pageq/sql/schema.sql``. It migrates a throwaway schema in the
database pageq resolves (``$PAGEQ_DSN``, ``$DATABASE_URL``, else the embedded server in ``./.pageq``; or the
DSN given as the only argument), prints `describe` of it, and drops it.
"""

from __future__ import annotations

import sys
import uuid

import pageq
from pageq.store.schema_dump import describe


def main(argv: list[str]) -> int:
    app = pageq.App(argv[1] if len(argv) > 1 else None, schema=f"dump_{uuid.uuid4().hex[:12]}")
    try:
        app.migrate()
        sys.stdout.write(describe(app.store))
    finally:
        app.close()
        app.drop_schema()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
