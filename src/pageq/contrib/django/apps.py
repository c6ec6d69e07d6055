"""The Django app ``pageq.contrib.django``: ``manage.py migrate`` also applies pageq's migrations."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


def _migrate(**_kwargs: Any) -> None:
    if not getattr(settings, "PAGEQ_MIGRATE", True):
        return
    from pageq.contrib.django import get_app

    applied = get_app().migrate()
    if applied and _kwargs.get("verbosity", 1) >= 1:
        print(f"  pageq: applied {', '.join(applied)}")


class PageqConfig(AppConfig):
    name = "pageq.contrib.django"
    label = "pageq"
    verbose_name = "pageq"

    def ready(self) -> None:
        post_migrate.connect(_migrate, sender=self, dispatch_uid="pageq-migrate")
