"""Routing rules: ordered (task glob, argument predicates) -> queue and priority, applied at enqueue."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pageq.errors import ConfigError, InvalidOptionError
from pageq.types import JSON, PRIORITY_RANGE, check_int, check_name

Predicate = Callable[[Mapping[str, JSON]], bool]


@dataclass(frozen=True)
class Route:
    """One rule: jobs of tasks matching ``task`` (a glob), whose arguments equal ``args`` and satisfy
    ``when``, go to ``queue`` with ``priority`` (``None`` keeps the task's own)."""

    task: str
    queue: str | None = None
    priority: int | None = None
    args: Mapping[str, JSON] = field(default_factory=dict)
    when: Predicate | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise InvalidOptionError(f"a route needs a task pattern, got {self.task!r}")
        if self.queue is not None:
            check_name("queue", self.queue)
        if self.priority is not None:
            check_int("priority", self.priority, PRIORITY_RANGE)
        if self.queue is None and self.priority is None:
            raise InvalidOptionError(f"route {self.task!r} sets neither a queue nor a priority")

    def why_not(self, task: str, args: Mapping[str, JSON]) -> str | None:
        """None when the rule matches, else the reason it does not."""
        if not fnmatch.fnmatchcase(task, self.task):
            return f"task does not match {self.task!r}"
        for key, wanted in self.args.items():
            if args.get(key, _MISSING) != wanted:
                return f"argument {key!r} is not {wanted!r}"
        if self.when is not None and not self.when(args):
            return "predicate is false"
        return None

    def describe(self) -> str:
        conditions = [f"task ~ {self.task}"] + [f"{k} == {v!r}" for k, v in self.args.items()]
        if self.when is not None:
            conditions.append(f"when {getattr(self.when, '__name__', 'predicate')}")
        return " and ".join(conditions)


_MISSING = object()


@dataclass(frozen=True)
class RouteDecision:
    """Where a job would go, and which rule (its index) decided it; `rule` is None for the task's own."""

    queue: str
    priority: int
    rule: int | None
    trace: list[tuple[Route, str | None]]


class Router:
    """The ordered rules of an app: the first matching rule decides."""

    def __init__(self, routes: Sequence[Route] = ()) -> None:
        self.rules: list[Route] = list(routes)

    def add(self, route: Route) -> Route:
        self.rules.append(route)
        return route

    def match(self, task: str, args: Mapping[str, JSON]) -> Route | None:
        for rule in self.rules:
            if rule.why_not(task, args) is None:
                return rule
        return None

    def explain(self, task: str, args: Mapping[str, JSON], queue: str, priority: int) -> RouteDecision:
        """Where a job of ``task`` with ``args`` would go (the task's defaults are ``queue``/``priority``)."""
        trace: list[tuple[Route, str | None]] = []
        for index, rule in enumerate(self.rules):
            reason = rule.why_not(task, args)
            trace.append((rule, reason))
            if reason is None:
                return RouteDecision(rule.queue or queue, _or(rule.priority, priority), index, trace)
        return RouteDecision(queue, priority, None, trace)

    def load(self, path: str | Path) -> list[Route]:
        """Append the rules of a TOML file: ``[[route]]`` tables with task, queue, priority, args."""
        loaded = load_routes(path)
        self.rules.extend(loaded)
        return loaded


def glob_regex(pattern: str) -> str:
    """The regular expression (anchored; valid in Python and in PostgreSQL) that matches what the glob
    ``pattern`` matches with `fnmatch.fnmatchcase`: ``*``, ``?``, ``[seq]`` and ``[!seq]``."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        char, i = pattern[i], i + 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and (end := _class_end(pattern, i)) is not None:
            body, i = pattern[i:end], end + 1
            negate = body.startswith("!")
            members = "".join(
                c if c.isalnum() or (c == "-" and 0 < k < len(body) - 1) else f"\\{c}"
                for k, c in enumerate(body[1:] if negate else body)
            )
            out.append(f"[{'^' if negate else ''}{members}]")
        else:
            out.append(char if char.isalnum() or char == "_" else f"\\{char}")
    return "".join([*out, "$"])


def _class_end(pattern: str, start: int) -> int | None:
    """Where the ``[...]`` opened before ``start`` closes (a ``]`` first in it is a member), else None."""
    j = start + (1 if pattern[start : start + 1] == "!" else 0)
    j += 1 if pattern[j : j + 1] == "]" else 0
    end = pattern.find("]", j)
    return None if end < 0 else end


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def load_routes(path: str | Path) -> list[Route]:
    """Rules from a TOML file, e.g.::

    [[route]]
    task = "reports.*"
    args = { tenant = "big" }
    queue = "reports-big"
    priority = -5
    """
    try:
        data: dict[str, Any] = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read routes from {path}: {exc}") from None
    routes = data.get("route", [])
    if not isinstance(routes, list):
        raise ConfigError(f"{path}: 'route' must be an array of tables ([[route]])")
    result = []
    for index, item in enumerate(routes):
        unknown = set(item) - {"task", "queue", "priority", "args"}
        if unknown or not isinstance(item.get("args", {}), dict):
            raise ConfigError(f"{path}: route {index + 1} has unknown keys {sorted(unknown)} or bad args")
        try:
            result.append(Route(item.get("task", ""), item.get("queue"), item.get("priority"),
                                dict(item.get("args", {}))))  # fmt: skip
        except InvalidOptionError as exc:
            raise ConfigError(f"{path}: route {index + 1}: {exc}") from None
    return result
