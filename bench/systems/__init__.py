"""Adapters of the benchmarked systems; see base.py for the contract and `SYSTEMS` for the registry."""

from __future__ import annotations

import importlib

from bench.systems.base import System

# name -> "module:Class"; an adapter whose package is missing is skipped with a message, never an error.
SYSTEMS: dict[str, str] = {
    "pageq": "bench.systems.pageq_system:PageqSystem",
    "raw": "bench.systems.raw:RawSystem",
    "pgqueuer": "bench.systems.pgqueuer_system:PgQueuerSystem",
    "procrastinate": "bench.systems.procrastinate_system:ProcrastinateSystem",
    "celery": "bench.systems.celery_system:CelerySystem",
}


def load(name: str) -> System:
    """An instance of the adapter called `name`; raises ImportError when its package is not installed."""
    module, _, cls = SYSTEMS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]
