"""`pageq.__all__` is the reviewed public API: sorted, complete, and documented."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

import pageq
import pageq.testing

# Changing the public API means changing this set, in review.
EXPECTED = {
    "AccessDeniedError", "AuthenticationError", "Decision", "DecryptError", "Keyring",
    "App", "Attempt", "Backoff", "Clock", "ConfigError", "Context", "DatabaseError", "FrozenClock",
    "InvalidOptionError", "InvalidStateError", "Job", "JobNotFoundError", "JobSpec", "JobState",
    "JobTimeoutError", "MigrationError", "NonRetryableError", "PageqError", "QueueStats",
    "SerializationError", "StaleLeaseError", "SystemClock", "Task", "Timings", "UnknownTaskError", "Worker",
    "WorkerOptions", "embedded_start", "embedded_status", "embedded_stop", "load_app",
    # the dispatcher (docs/dispatching.md)
    "DuplicateJobError", "ParentResult", "Periodic", "QueueControl", "Route", "RouteDecision", "Router",
    "Unique",
    "load_routes",
    # the HTTP API (docs/http-api.md): a page of App.page_jobs
    "JobPage",
    # monitoring (docs/monitoring.md): what `App.stats` returns
    "Counts", "Latency", "MinuteStats", "Percentiles", "QueueSummary", "Rates", "SystemStats", "Totals",
    "WorkerStats",
    # webhooks and events (docs/webhooks.md); the rest lives in pageq.webhooks
    "Event", "WebhookSettings",
}  # fmt: skip

# Public classes and functions of the user-facing modules that are deliberately not exported.
INTERNAL = {
    "pageq.config": {"Database", "configured_dsn", "flag", "home", "mask", "resolve", "schema_name"},
    "pageq.context": {"JobTransaction"},
    "pageq.task": {"TaskOptions", "call_hook"},
    "pageq.types": {"check_args", "check_int", "check_name", "check_run_at", "check_seconds", "dump_json"},
    "pageq.worker.daemon": {"Running"},
    "pageq.worker.supervisor": {"loop_factory", "run_forever", "supervise"},
    "pageq.periodic": {"fire_due"},
    "pageq.monitor": {"Stats", "ReadCache"},  # reached as `app.stats`, `app.stats.cache`
    "pageq.routing": {"glob_regex"},
    "pageq.publishing": {"apublish", "arguments", "publish", "route_row", "steps", "task_rows"},
}
MODULES = [
    "pageq.app", "pageq.clock", "pageq.config", "pageq.context", "pageq.errors", "pageq.retry",
    "pageq.task", "pageq.types", "pageq.worker.daemon", "pageq.worker.supervisor", "pageq.routing",
    "pageq.periodic", "pageq.stats", "pageq.monitor", "pageq.publishing",
]  # fmt: skip


def defined_here(module: ModuleType) -> set[str]:
    """Public classes and functions whose home is ``module`` (not those it imports)."""
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }


def own_doc(obj: object) -> str:
    """The object's own docstring (not inherited, nor the signature a dataclass makes up)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    name = getattr(obj, "__name__", "")
    if not doc or doc.startswith(f"{name}("):
        return ""
    return inspect.cleandoc(doc)


def test_all_is_sorted_and_unique() -> None:
    assert pageq.__all__ == sorted(pageq.__all__)
    assert len(set(pageq.__all__)) == len(pageq.__all__)


def test_all_is_the_reviewed_api() -> None:
    assert set(pageq.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    missing = [name for name in pageq.__all__ if not hasattr(pageq, name)]
    assert not missing


@pytest.mark.parametrize("module_name", MODULES)
def test_public_definitions_are_exported_or_internal(module_name: str) -> None:
    module = importlib.import_module(module_name)
    unexported = defined_here(module) - set(pageq.__all__) - INTERNAL.get(module_name, set())
    assert not unexported, f"{module_name} defines {sorted(unexported)}: export them or list them as internal"
    for name in defined_here(module) & set(pageq.__all__):
        assert getattr(pageq, name) is getattr(module, name)


def test_internal_names_still_exist() -> None:
    for module_name, names in INTERNAL.items():
        module = importlib.import_module(module_name)
        assert names <= defined_here(module), f"{module_name}: update INTERNAL"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exported_callables_have_docstrings(name: str) -> None:
    obj = getattr(pageq, name)
    assert callable(obj)
    assert own_doc(obj), f"pageq.{name} has no docstring"


def test_testing_helpers_have_docstrings() -> None:
    for name in defined_here(pageq.testing):
        assert own_doc(getattr(pageq.testing, name)), f"pageq.testing.{name} has no docstring"


def test_internal_packages_say_so() -> None:
    for module_name in ("pageq.store", "pageq.worker", "pageq.sql", "pageq.security", "pageq.access",
                        "pageq.leases"):  # fmt: skip
        doc = importlib.import_module(module_name).__doc__ or ""
        assert "not public api" in doc.lower(), module_name
