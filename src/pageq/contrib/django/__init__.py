"""Django: enqueue in the transaction of Django's own database connection (psycopg 3), a
``manage.py pageq_worker`` command, and pageq's migrations run by ``manage.py migrate``.
Docs: docs/integrations/django.md.

Settings: ``INSTALLED_APPS += ["pageq.contrib.django"]`` and ``PAGEQ_APP = "shop.tasks:app"``, the
``module:attribute`` of your `pageq.App` (made with `app_from_settings` to share Django's database).

Example::

    with transaction.atomic():
        order = Order.objects.create(total=42)
        pageq.contrib.django.enqueue(send_receipt, order_id=order.id)
    # the order and its job commit together, or neither does
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pageq.app import App
from pageq.config import Database
from pageq.task import Task
from pageq.types import JobSpec

if TYPE_CHECKING:
    from pageq.worker import Worker

DJANGO_OPTIONS = frozenset({
    "isolation_level", "server_side_binding", "assume_role", "pool", "cursor_factory", "context", "service",
    "passfile",
})  # fmt: skip
"""OPTIONS of Django's PostgreSQL backend that are not libpq connection parameters."""


def database_settings(url: str | None = None) -> dict[str, Any]:
    """A ``DATABASES`` entry for Django's PostgreSQL backend: the database at ``url``, else ``PAGEQ_DSN``,
    else ``DATABASE_URL``, else pageq's embedded server (started if it is not running; ``PAGEQ_HOME``).
    libpq parameters other than the name, user, password, host and port go to its OPTIONS.

    Example (settings.py)::

        DATABASES = {"default": database_settings()}
    """
    from pageq import config

    params: dict[str, Any] = conninfo_to_dict(config.resolve(url).dsn)
    entry: dict[str, Any] = {"ENGINE": "django.db.backends.postgresql"}
    for key, param in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"),
                       ("PORT", "port")):  # fmt: skip
        entry[key] = str(params.pop(param, "") or "")
    if params:
        entry["OPTIONS"] = params
    return entry


def database_dsn(using: str = DEFAULT_DB_ALIAS) -> str:
    """A libpq connection string for the Django database ``using`` (its NAME, USER, PASSWORD, HOST, PORT and
    the libpq parameters among its OPTIONS, such as sslmode)."""
    try:
        conf = settings.DATABASES[using]
    except KeyError:
        raise ImproperlyConfigured(f"pageq: no database {using!r} in settings.DATABASES") from None
    if "postgresql" not in str(conf.get("ENGINE", "")):
        raise ImproperlyConfigured(f"pageq needs a PostgreSQL database; {using!r} uses {conf.get('ENGINE')}")
    params: dict[str, Any] = {
        "dbname": conf.get("NAME") or None, "user": conf.get("USER") or None,
        "password": conf.get("PASSWORD") or None, "host": conf.get("HOST") or None,
        "port": str(conf["PORT"]) if conf.get("PORT") else None,
    }  # fmt: skip
    options = conf.get("OPTIONS") or {}
    params.update({k: v for k, v in options.items() if k not in DJANGO_OPTIONS and isinstance(v, str | int)})
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


class DjangoApp(App):
    """A `pageq.App` on the Django database ``using``, read from Django's settings when the App first
    connects (not when it is made): in Django's tests it is the test database.

    Its workers run each sync handler (thread executor) between two ``django.db.close_old_connections()``,
    as Django does around a request: a handler gets a usable connection, and with ``CONN_MAX_AGE = 0``
    (Django's default) its thread's connection is closed when it returns.
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS, **options: Any) -> None:
        super().__init__(None, **options)
        self.using = using

    @property
    def database(self) -> Database:
        """The Django database ``using`` (see `pageq.App.database`)."""
        if self._dsn_arg is None:
            self._dsn_arg = database_dsn(self.using)
        return super().database

    def worker(self, queues: Sequence[str] = ("default",), concurrency: int = 10, **options: Any) -> Worker:
        """A worker (see `pageq.App.worker`) whose sync handlers manage Django's connections."""
        for task in self.tasks.values():
            if task.executor == "thread" and not getattr(task.fn, "_pageq_django", False):
                task.fn = _closing_connections(task.fn)
        return super().worker(queues, concurrency, **options)


def _closing_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    run._pageq_django = True  # type: ignore[attr-defined]
    return run


def app_from_settings(using: str = DEFAULT_DB_ALIAS, **options: Any) -> DjangoApp:
    """A `pageq.App` on the Django database ``using`` (``options``: those of `pageq.App`, such as
    ``schema``). Call it in the module that ``PAGEQ_APP`` names, and register the tasks on it."""
    return DjangoApp(using, **options)


def get_app() -> App:
    """The App that ``settings.PAGEQ_APP`` names (``"module:attribute"``)."""
    from pageq.worker import load_app

    ref = getattr(settings, "PAGEQ_APP", None)
    if not isinstance(ref, str):
        raise ImproperlyConfigured('pageq: set PAGEQ_APP = "module:attribute" of your pageq.App in settings')
    return load_app(ref)


def psycopg_connection(using: str = DEFAULT_DB_ALIAS) -> psycopg.Connection[Any]:
    """Django's connection ``using``, opened if need be: the psycopg 3 connection underneath."""
    wrapper = connections[using]
    wrapper.ensure_connection()
    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise ImproperlyConfigured(
            f"pageq needs Django's PostgreSQL backend on psycopg 3 (pip install psycopg); {using!r} uses "
            f"{type(raw).__module__}"
        )
    return raw


def enqueue(task: Task, /, *, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> int:
    """Enqueue a job of ``task`` on Django's connection ``using``: inside ``transaction.atomic()`` it
    commits (and runs) only if that block does; outside, at once. ``kwargs``: the job's arguments and
    enqueue options, as for `Task.enqueue`. Returns the job id."""
    with transaction.atomic(using=using):
        return task.enqueue(conn=psycopg_connection(using), **kwargs)


def enqueue_many(app: App, specs: Iterable[JobSpec], /, *, using: str = DEFAULT_DB_ALIAS) -> list[int]:
    """`App.enqueue_many` on Django's connection ``using`` (all or none, like `enqueue`)."""
    with transaction.atomic(using=using):
        return app.enqueue_many(specs, conn=psycopg_connection(using))


__all__ = [
    "DjangoApp",
    "app_from_settings",
    "database_dsn",
    "database_settings",
    "enqueue",
    "enqueue_many",
    "get_app",
    "psycopg_connection",
]
