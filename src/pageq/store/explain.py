"""The planner's plan of a named query, for tests that the hot queries use their indexes. Not public API."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pageq.store.engine import Store


def explain(store: Store, name: str, params: Mapping[str, object]) -> str:
    """``EXPLAIN (FORMAT JSON)`` of the named query ``name`` with ``params``, as JSON text.

    Nothing runs: EXPLAIN without ANALYZE only plans, even for an UPDATE or DELETE.
    """
    with store.transaction() as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + store.queries[name], params).fetchone()
    assert row is not None
    plan = row[0]
    return plan if isinstance(plan, str) else json.dumps(plan)
