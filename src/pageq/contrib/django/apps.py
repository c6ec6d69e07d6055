"""The Django app ``pageq.contrib.django``: ``manage.py migrate`` also applies pageq's migrations."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate


def _migrate(using: str = DEFAULT_DB_ALIAS, verbosity: int = 1, **_kwargs: Any) -> None:
    """After ``manage.py migrate`` (or the creation of a test database) of the App's database, apply pageq's
    migrations to that database."""
    if not getattr(settings, "PAGEQ_MIGRATE", True):
        return
    from pageq.app import App
    from pageq.contrib.django import DjangoApp, database_dsn, get_app

    app = get_app()
    if not isinstance(app, DjangoApp):  # an App on a database of its own
        applied = app.migrate() if using == DEFAULT_DB_ALIAS else []
    elif using == app.using:
        target = App(database_dsn(using), schema=app.schema)  # the database migrated now (a test one too)
        try:
            applied = target.migrate()
        finally:
            target.close()
    else:
        return
    if applied and verbosity >= 1:
        print(f"  pageq: applied {', '.join(applied)}")


class PageqConfig(AppConfig):
    name = "pageq.contrib.django"
    label = "pageq"
    verbose_name = "pageq"

    def ready(self) -> None:
        post_migrate.connect(_migrate, sender=self, dispatch_uid="pageq-migrate")
