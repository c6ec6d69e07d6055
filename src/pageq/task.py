"""A task: a named handler with its default options, and the calls that enqueue it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pageq.errors import InvalidOptionError
from pageq.retry import DEFAULT_BACKOFF, Backoff
from pageq.types import (
    MAX_ATTEMPTS_RANGE,
    PRIORITY_RANGE,
    DepPolicy,
    Job,
    JobSpec,
    OnParentFailure,
    Unique,
    check_args,
    check_int,
    check_name,
    check_run_at,
    check_seconds,
)

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.context import Context

Executor = Literal["auto", "async", "thread", "process"]
Hook = Callable[..., Any]
OPTION_NAMES = frozenset({
    "queue", "priority", "delay", "run_at", "max_attempts", "timeout", "conn",
    "unique", "group_key", "after", "on_parent_failure", "on_complete", "on_success", "on_failure",
    "idempotency_key",
})  # fmt: skip
FollowUps: TypeAlias = "JobSpec | Task | Sequence[JobSpec | Task] | None"
MAX_KEY = 200


def _wants_context(fn: Callable[..., Any]) -> bool:
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        return False
    first = params[0]
    annotation = first.annotation
    named = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return first.name == "ctx" or named.endswith("Context")


@dataclass(frozen=True)
class TaskOptions:
    """Defaults a task applies to each job, each overridable per enqueue."""

    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    timeout: float | None = None

    def validated(self) -> TaskOptions:
        check_name("queue", self.queue)
        check_int("priority", self.priority, PRIORITY_RANGE)
        check_int("max_attempts", self.max_attempts, MAX_ATTEMPTS_RANGE)
        check_seconds("timeout", self.timeout, allow_zero=False)
        return self


class Task:
    """A registered handler. Call it to run it in-process; `enqueue` it to run it on a worker.

    Example::

        @app.task(queue="emails", max_attempts=5, timeout=30)
        def send_email(to: str, subject: str) -> None: ...

        job_id = send_email.enqueue(to="a@example.com", subject="hi")
    """

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        name: str,
        options: TaskOptions,
        retry: Backoff = DEFAULT_BACKOFF,
        executor: Executor = "auto",
        hooks: Mapping[str, Hook | None] | None = None,
        accept_clear: bool = False,
    ) -> None:
        self.app = app
        self.accept_clear = accept_clear
        """With a keyring, also run jobs whose arguments are in clear (the SQL API writes them so): a database
        writer without the keys can then choose those arguments. Without, such a job goes to `dead`."""
        self.fn = fn
        self.name = check_name("task", name)
        self.options = options.validated()
        self.retry = retry
        self.is_async = inspect.iscoroutinefunction(fn)
        self.executor: Executor = executor if executor != "auto" else (
            "async" if self.is_async else "thread"
        )  # fmt: skip
        if self.executor == "async" and not self.is_async:
            raise InvalidOptionError(f"task {name!r}: executor='async' needs an async function")
        self.wants_context = _wants_context(fn)
        self.signature = inspect.signature(fn)
        self._fitting: set[frozenset[str]] = set()
        self._check_parameters()
        hooks = hooks or {}
        self.on_success, self.on_failure, self.on_dead = (
            hooks.get("on_success"), hooks.get("on_failure"), hooks.get("on_dead"),
        )  # fmt: skip
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__module__ = fn.__module__

    def _check_parameters(self) -> None:
        params = list(self.signature.parameters)[1 if self.wants_context else 0 :]
        clash = OPTION_NAMES.intersection(params)
        if clash:
            raise InvalidOptionError(
                f"task {self.name!r}: parameter(s) {sorted(clash)} clash with enqueue options; rename them"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Check that ``args`` fit the handler's signature; return them as a dict."""
        checked = check_args(self.name, args)
        keys = frozenset(checked)
        if keys in self._fitting:  # keyword arguments fit or not by their names alone
            return checked
        try:
            if self.wants_context:
                self.signature.bind(None, **checked)
            else:
                self.signature.bind(**checked)
        except TypeError as exc:
            raise InvalidOptionError(f"arguments do not fit task {self.name!r}: {exc}") from None
        if len(self._fitting) < 64:
            self._fitting.add(keys)
        return checked

    def job(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        unique: Unique | str | None = None,
        group_key: str | None = None,
        after: Sequence[int | Job] = (),
        on_parent_failure: OnParentFailure = "cancel",
        on_complete: FollowUps = None,
        on_success: FollowUps = None,
        on_failure: FollowUps = None,
        idempotency_key: str | None = None,
        **args: Any,
    ) -> JobSpec:
        """A job of this task, validated but not written: for `App.enqueue_many`.

        ``unique``: a `Unique` (or just its key); ``group_key``: jobs of one group run one at a time, in
        enqueue order; ``after``: job ids that must finish first (``on_parent_failure``: ``"cancel"``
        this job or ``"run"`` it anyway when one dies or is cancelled).

        Follow-ups (a task without arguments or a job from ``other_task.job(...)``, one or a list), enqueued
        in the same transaction and run once this job finished: ``on_complete`` whatever its outcome,
        ``on_success`` only if it succeeded, ``on_failure`` only if it died or was cancelled (a follow-up
        that will not run is cancelled). They read this job's state, result and error with
        ``ctx.parent_results()``.

        With ``idempotency_key``, enqueueing makes at most one job per key, ever: a retried enqueue (say
        after a connection lost during its commit) returns the id of the job the first one made.
        """
        opts = self.options
        if delay is not None and run_at is not None:
            raise InvalidOptionError("give delay or run_at, not both")
        if idempotency_key is not None and not (
            isinstance(idempotency_key, str) and 0 < len(idempotency_key) <= MAX_KEY
        ):
            raise InvalidOptionError(f"idempotency_key must be a string of 1 to {MAX_KEY} characters")
        # `args` is a fresh dict of str keys: when its key set is known to fit, it needs no other check
        bound = args if frozenset(args) in self._fitting else self.bind(args)
        if self.app.router.rules and (queue is None or priority is None):
            route = self.app.router.match(self.name, bound)
            if route is not None:
                queue = route.queue if queue is None else queue
                priority = route.priority if priority is None else priority
        return JobSpec(  # the task's own options were checked at registration
            task=self.name,
            args=bound,
            queue=opts.queue if queue is None else check_name("queue", queue),
            priority=opts.priority if priority is None else check_int("priority", priority, PRIORITY_RANGE),
            max_attempts=opts.max_attempts
            if max_attempts is None
            else check_int("max_attempts", max_attempts, MAX_ATTEMPTS_RANGE),
            timeout=opts.timeout if timeout is None else check_seconds("timeout", timeout, allow_zero=False),
            delay=None if delay is None else check_seconds("delay", delay),
            run_at=None if run_at is None else check_run_at(run_at),
            unique=None
            if unique is None
            else Unique(unique)
            if isinstance(unique, str)
            else _check_unique(unique),
            group_key=None if group_key is None else _check_group(group_key),
            after=_check_after(after) if after else (),
            on_parent_failure="cancel" if on_parent_failure == "cancel" else _check_policy(on_parent_failure),
            followups=()
            if on_complete is None and on_success is None and on_failure is None
            else _followups(on_complete, on_success, on_failure),
            idempotency_key=idempotency_key,
        )

    def enqueue(self, *, conn: Any = None, **kwargs: Any) -> int:
        """Write one job and return its id; with ``conn=``, inside that psycopg transaction."""
        return self.app.enqueue_many([self.job(**kwargs)], conn=conn)[0]

    async def enqueue_async(self, *, conn: Any = None, **kwargs: Any) -> int:
        """Async twin of `enqueue`."""
        return (await self.app.enqueue_many_async([self.job(**kwargs)], conn=conn))[0]


def _check_unique(value: object) -> Unique | None:
    if value is not None and not isinstance(value, Unique):
        raise InvalidOptionError(f"unique must be a pageq.Unique or a key, got {value!r}")
    return value


def _check_group(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 512:
        raise InvalidOptionError(f"group_key must be a string of 1-512 characters, got {value!r}")
    return value


def _check_after(values: object) -> tuple[int, ...]:
    if isinstance(values, int | Job) or not isinstance(values, Iterable):
        values = [values]
    ids = []
    for value in values:
        job_id = value.id if isinstance(value, Job) else value
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
            raise InvalidOptionError(f"after= takes job ids or Jobs, got {value!r}")
        ids.append(job_id)
    return tuple(dict.fromkeys(ids))


def _followups(complete: object, success: object, failure: object) -> tuple[tuple[DepPolicy, JobSpec], ...]:
    found: list[tuple[DepPolicy, JobSpec]] = []
    policies: tuple[tuple[str, DepPolicy, object], ...] = (
        ("on_complete", "run", complete), ("on_success", "cancel", success), ("on_failure", "only", failure),
    )  # fmt: skip
    for name, policy, value in policies:
        items = () if value is None else (value,) if isinstance(value, JobSpec | Task) else value
        if not isinstance(items, Sequence) or not all(isinstance(i, JobSpec | Task) for i in items):
            raise InvalidOptionError(
                f"{name}= takes a task or a job (other_task.job(...)), or a list of them, got {value!r}"
            )
        found.extend((policy, item.job() if isinstance(item, Task) else item) for item in items)
    return tuple(found)


def _check_policy(value: object) -> OnParentFailure:
    if value == "cancel":
        return "cancel"
    if value == "run":
        return "run"
    raise InvalidOptionError(f"on_parent_failure must be 'cancel' or 'run', got {value!r}")


async def call_hook(hook: Hook, ctx: Context, value: object) -> None:
    """Run a callback, awaiting it when it is async."""
    outcome = hook(ctx, value)
    if inspect.isawaitable(outcome):
        await outcome
