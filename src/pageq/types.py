"""Plain data: job states, job rows, options. Pure: no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Literal

from pageq.errors import InvalidOptionError, SerializationError

JSON = Any
"""A value that round-trips through JSON."""


class JobState(StrEnum):
    """The states of docs/state-machine.md; the schema's CHECK constraint lists the same."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
LIVE_STATES = frozenset(set(JobState) - FINAL_STATES)

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
PRIORITY_RANGE = (-32768, 32767)
MAX_ATTEMPTS_RANGE = (1, 1000)


@dataclass(frozen=True)
class Attempt:
    """One failed attempt of a job, as kept in its error history."""

    attempt: int
    error: str
    traceback: str | None
    worker: str | None
    at: str


@dataclass(frozen=True)
class Job:
    """A job as stored: its task, arguments, state and history."""

    id: int
    task: str
    queue: str
    args: dict[str, JSON]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    result: JSON = None
    errors: list[Attempt] = field(default_factory=list)
    timeout: float | None = None
    lease_token: str | None = None
    group_key: str | None = None
    linked: bool = False  # it has a group or dependents: finishing it settles them (internal)
    sealed: bool = False  # its arguments were stored encrypted (a claim decrypted them; internal)


OnConflict = Literal["ignore", "replace", "raise"]
OnParentFailure = Literal["cancel", "run"]
DepPolicy = Literal["cancel", "run", "only"]
"""When a dependency is satisfied: its parent succeeded ("cancel": the child is cancelled otherwise), the
parent finished whatever its outcome ("run"), or the parent died or was cancelled ("only": on_failure=)."""
WAITING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING, JobState.BLOCKED})


@dataclass(frozen=True)
class Unique:
    """A unique key for a job: while a job holding ``key`` is in one of ``states`` (and, with a
    ``window``, for that many seconds after it was enqueued), another job with the key conflicts.

    ``on_conflict``: ``"ignore"`` returns the holder's id, ``"replace"`` cancels a holder that has not
    started and enqueues the new job, ``"raise"`` raises `DuplicateJobError`.

    Example::

        sync_user.enqueue(user_id=7, unique=pageq.Unique(f"sync:{7}", window=60))
    """

    key: str
    states: frozenset[JobState] = LIVE_STATES
    window: float | None = None
    on_conflict: OnConflict = "ignore"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not 1 <= len(self.key) <= 512:
            raise InvalidOptionError(f"unique key must be a string of 1-512 characters, got {self.key!r}")
        states = frozenset(JobState(s) for s in self.states)
        if not states:
            raise InvalidOptionError("unique states must name at least one state")
        object.__setattr__(self, "states", states)
        check_seconds("unique window", self.window, allow_zero=False)
        if self.on_conflict not in ("ignore", "replace", "raise"):
            raise InvalidOptionError(
                f"on_conflict must be ignore, replace or raise, got {self.on_conflict!r}"
            )


@dataclass(frozen=True)
class QueueControl:
    """A queue's run-time controls (`App.queue_controls`); ``None`` means no limit."""

    name: str
    paused: bool = False
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    weight: int = 1

    @property
    def limited(self) -> bool:
        """Whether claims of this queue must go through the controlled claim."""
        return self.concurrency is not None or self.rate_limit is not None or self.weight != 1


@dataclass(frozen=True)
class JobSpec:
    """A job not yet written: what `Task.job()` builds for `App.enqueue_many`."""

    task: str
    args: dict[str, JSON]
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    delay: float | None = None
    run_at: datetime | None = None
    unique: Unique | None = None
    group_key: str | None = None
    after: tuple[int, ...] = ()
    on_parent_failure: DepPolicy = "cancel"
    followups: tuple[tuple[DepPolicy, JobSpec], ...] = ()
    """Jobs to enqueue after this one with ``after=`` it and the policy given (on_complete= and co)."""
    idempotency_key: str | None = None
    args_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # validated and serialised once, here, so `dataclasses.replace` can never keep stale JSON
        object.__setattr__(self, "args_json", dump_json(f"arguments of {self.task!r}", self.args))

    @property
    def special(self) -> bool:
        """Whether it needs the dispatcher's insert (unique key, group or dependencies)."""
        return self.unique is not None or self.group_key is not None or bool(self.after)

    def followups_of(self, job_id: int) -> list[JobSpec]:
        """This job's follow-ups, made dependents of ``job_id`` (this job once enqueued)."""
        return [
            replace(spec, after=(*spec.after, job_id), on_parent_failure=policy)
            for policy, spec in self.followups
        ]


@dataclass(frozen=True)
class JobPage:
    """One page of `App.page_jobs`: its jobs, newest first, and where the next page starts (None: last);
    oldest first, the next page starts after ``next_after_id``."""

    jobs: list[Job]
    next_before_id: int | None
    next_after_id: int | None = None


@dataclass(frozen=True)
class QueueStats:
    """Counts by state and recent activity of one queue."""

    queue: str
    counts: dict[JobState, int]
    oldest_queued_age: float | None
    completed_last_minute: int

    @property
    def throughput(self) -> float:
        """Jobs finished per second over the last minute."""
        return self.completed_last_minute / 60.0


def check_name(kind: str, value: object) -> str:
    """A task or queue name: 1-128 characters of letters, digits and ``_ . : -``."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidOptionError(
            f"invalid {kind} name {value!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return value


def check_int(kind: str, value: object, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise InvalidOptionError(f"{kind} must be an integer in [{bounds[0]}, {bounds[1]}], got {value!r}")
    return value


def check_seconds(kind: str, value: object, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidOptionError(f"{kind} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value > 10 * 365 * 86400:
        raise InvalidOptionError(f"{kind} is out of range: {value!r}")
    return float(value)


def check_run_at(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidOptionError(f"run_at must be a timezone-aware datetime, got {value!r}")
    return value


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[object], str]:
    """Compact JSON without NaN, made once: `json.dumps` and `JSONEncoder.encode` rebuild the C encoder on
    every call, which doubles the cost of a small payload. Circular structures raise RecursionError (the
    C encoder's circular check is off, as it is the slower part)."""
    if c_make_encoder is None:  # not CPython: the pure-Python encoder
        return json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
    encode = c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


_ENCODE = _make_encoder()


def dump_json(kind: str, value: object) -> str:
    """Serialise ``value`` to JSON text, or raise a `SerializationError` naming what failed."""
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{kind} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise SerializationError(f"{kind} is not JSON-serialisable: nested too deeply or circular") from None
    if "\\u0000" in text:
        raise SerializationError(f"{kind} contains a NUL character, which PostgreSQL cannot store")
    return text


def check_args(task: str, args: Mapping[str, object]) -> dict[str, JSON]:
    """The arguments as a dict with string keys (`JobSpec` checks they are JSON)."""
    for key in args:
        if not isinstance(key, str):
            raise SerializationError(f"arguments of {task!r} must have string keys, got {key!r}")
    return dict(args)
