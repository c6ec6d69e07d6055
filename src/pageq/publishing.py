"""Publishing an app's tasks and routing rules to the database, where the SQL API reads them. Not public API
beyond `App.publish_routes`."""

from __future__ import annotations

import inspect
import json
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pageq.routing import Route, glob_regex
from pageq.store import Store, sqlapi
from pageq.store.engine import Op

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.task import Task

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


Steps = Generator[Op[Any], Any, tuple[int, int | None]]


def steps(app: App, routes: bool) -> Steps:
    """The statements (sans-I/O, one transaction) that write ``app``'s tasks (new or changed rows) and, with
    ``routes``, replace the published routing rules by its own when they differ. Returns (task rows
    written, rules written or None)."""
    rows = task_rows(app)
    written: int = (yield sqlapi.tasks_publish(rows, app.clock.now())) if rows.names else 0
    if not routes:
        return written, None
    rules = [route_row(rule) for rule in app.router.rules]
    yield sqlapi.routes_lock()
    if (yield sqlapi.routes_published()) == rules:
        return written, 0
    yield sqlapi.routes_clear()
    published: int = yield sqlapi.routes_publish(rules)
    return written, published


def publish(app: App, store: Store, *, routes: bool = True) -> tuple[int, int | None]:
    """Run `steps` in a transaction of ``store``."""
    plan = steps(app, routes)
    with store.transaction() as tx:
        try:
            op = next(plan)
            while True:
                op = plan.send(store.run(op, tx))
        except StopIteration as done:
            result: tuple[int, int | None] = done.value
            return result


async def apublish(app: App, store: Store, *, routes: bool = True) -> tuple[int, int | None]:
    """Async twin of `publish`."""
    plan = steps(app, routes)
    async with store.atransaction() as tx:
        try:
            op = next(plan)
            while True:
                op = plan.send(await store.arun(op, tx))
        except StopIteration as done:
            result: tuple[int, int | None] = done.value
            return result


def task_rows(app: App) -> sqlapi.TaskRows:
    """One row per task name and alias, sorted by name."""
    named = {name: app.tasks[name] for name in app.tasks}
    named.update({alias: app.tasks[target] for alias, target in app._aliases.items()})
    rows = sqlapi.TaskRows([], [], [], [], [], [], [], [], [], [], [], [], [], [])
    for name in sorted(named):
        task = named[name]
        required, optional, any_args = arguments(task)
        rows.names.append(name)
        rows.tasks.append(task.name)
        rows.queues.append(task.options.queue)
        rows.priorities.append(task.options.priority)
        rows.max_attempts.append(task.options.max_attempts)
        rows.timeouts.append(None if task.options.timeout is None else float(task.options.timeout))
        rows.required.append(",".join(required))
        rows.optional.append(",".join(optional))
        rows.any_args.append(any_args)
        rows.bases.append(float(task.retry.base))
        rows.caps.append(float(task.retry.cap))
        rows.factors.append(float(task.retry.factor))
        rows.jitters.append(float(task.retry.jitter))
        rows.encrypted.append(app.keyring is not None and not task.accept_clear)
    return rows


def arguments(task: Task) -> tuple[list[str], list[str], bool]:
    """The handler's keyword arguments: (required, optional, whether it takes any other)."""
    params = list(task.signature.parameters.values())[1 if task.wants_context else 0 :]
    required = [p.name for p in params if p.kind in _NAMED and p.default is inspect.Parameter.empty]
    optional = [p.name for p in params if p.kind in _NAMED and p.default is not inspect.Parameter.empty]
    return required, optional, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def route_row(rule: Route) -> sqlapi.RouteRow:
    predicate = None if rule.when is None else getattr(rule.when, "__name__", "predicate")
    args = json.dumps(rule.args, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return sqlapi.RouteRow(rule.task, glob_regex(rule.task), args, rule.queue, rule.priority, predicate)
