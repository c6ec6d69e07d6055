"""Access control decisions: grants of actions on queue and task-name patterns. Pure: no I/O.

A grant allows (or denies) one action, or every action (``*``), on the jobs whose queue and task name
match its two patterns. In a pattern ``*`` matches any run of characters and every other character
matches itself (case-sensitive). No matching grant: denied. A matching deny beats any allow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from pageq.types import NAME_RE


class Action(StrEnum):
    """What a grant allows: enqueue jobs, work them (claim and complete), read them, manage them."""

    ENQUEUE = "enqueue"
    WORK = "work"
    READ = "read"
    MANAGE = "manage"


OPERATIONS: dict[str, Action] = {
    "enqueue": Action.ENQUEUE,
    "claim": Action.WORK,
    "complete": Action.WORK,
    "read": Action.READ,
    "cancel": Action.MANAGE,
    "retry": Action.MANAGE,
    "purge": Action.MANAGE,
}
"""The operations of the API and the action each needs (the ACL decision matrix has these seven)."""

PATTERN_RE = re.compile(r"^[A-Za-z0-9_.:\-*]{1,128}$")
PRINCIPAL_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,47}$")


def check_pattern(kind: str, pattern: str) -> str:
    """A queue or task pattern: name characters and ``*``."""
    if not isinstance(pattern, str) or not PATTERN_RE.match(pattern):
        raise ValueError(f"invalid {kind} pattern {pattern!r}: use name characters and '*'")
    return pattern


def check_principal(name: str) -> str:
    """A principal name: lowercase letter first, then lowercase letters, digits, '_' or '-' (max 48)."""
    if not isinstance(name, str) or not PRINCIPAL_RE.match(name):
        raise ValueError(
            f"invalid principal name {name!r}: use a-z, 0-9, '_' and '-', starting with a letter"
        )
    return name


def action_of(value: str) -> Action | None:
    """The action of an action or operation name; ``*`` is None (every action)."""
    if value == "*":
        return None
    if value in OPERATIONS:
        return OPERATIONS[value]
    raise ValueError(f"unknown action {value!r}: use one of {[a.value for a in Action]}, an operation or '*'")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z", re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the glob ``pattern`` (only ``*`` is special)."""
    return _compiled(pattern).match(value) is not None


def like_pattern(pattern: str) -> str:
    """The SQL LIKE pattern equivalent to a glob (what the database's policies use)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


@dataclass(frozen=True)
class Grant:
    """One rule: ``allow`` (or deny) ``action`` (None: every action) on matching queues and tasks."""

    principal: str
    action: Action | None
    queue: str = "*"
    task: str = "*"
    allow: bool = True
    id: int | None = None

    def applies(self, action: Action, queue: str, task: str) -> bool:
        """Whether this rule speaks about the request. A request on every queue or task (``*``, as a bulk
        operation without a filter) is covered by an allow only if its pattern is ``*``, and by any deny."""
        if self.action is not None and self.action is not action:
            return False
        return all(
            (pattern == "*" or not self.allow) if value == "*" else matches(pattern, value)
            for pattern, value in ((self.queue, queue), (self.task, task))
        )

    def describe(self) -> str:
        verb = "allow" if self.allow else "deny"
        return (
            f"{verb} {self.action.value if self.action else '*'} on queue {self.queue!r} task {self.task!r}"
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of a check and why: the rule that decided it, or that none matched."""

    allowed: bool
    principal: str
    action: Action
    queue: str
    task: str
    reason: str
    rule: Grant | None = None


def decide(
    principal: str, grants: Iterable[Grant], action: Action | str, queue: str, task: str, *,
    active: bool = True,
) -> Decision:  # fmt: skip
    """Decide whether ``principal`` may do ``action`` on a job of ``task`` in ``queue``.

    Example::

        decide("p", [Grant("p", Action.ENQUEUE, task="email.*")], "enqueue", "default", "email.send")
    """
    act = action if isinstance(action, Action) else (action_of(action) or Action.MANAGE)

    def result(allowed: bool, reason: str, rule: Grant | None = None) -> Decision:
        return Decision(allowed, principal, act, queue, task, reason, rule)

    if not active:
        return result(False, f"principal {principal!r} is unknown or disabled")
    for kind, value in (("task", task), ("queue", queue)):
        if not isinstance(value, str) or (value != "*" and not NAME_RE.match(value)):
            return result(False, f"invalid {kind} name {value!r}")
    applicable = [g for g in grants if g.principal == principal and g.applies(act, queue, task)]
    deny = next((g for g in applicable if not g.allow), None)
    if deny is not None:
        return result(False, f"denied by rule: {deny.describe()}", deny)
    allow = next((g for g in applicable if g.allow), None)
    if allow is not None:
        return result(True, f"allowed by rule: {allow.describe()}", allow)
    return result(False, "no rule allows it (deny by default)")
