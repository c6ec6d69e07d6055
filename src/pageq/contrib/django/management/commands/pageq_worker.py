"""``manage.py pageq_worker``: run a pageq worker for ``settings.PAGEQ_APP`` until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pageq.contrib.django import get_app
from pageq.errors import PageqError


class Command(BaseCommand):
    help = "Run a pageq worker for settings.PAGEQ_APP until SIGTERM or Ctrl-C (which drain running jobs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-q", "--queue", action="append", dest="queues",
            help="A queue to serve (repeat for several; default: default).",
        )  # fmt: skip
        parser.add_argument("-c", "--concurrency", type=int, default=10, help="Jobs run at once.")
        parser.add_argument("--lease", type=float, default=30.0, help="Seconds a claim holds a job.")

    def handle(self, *args: Any, **options: Any) -> None:
        queues = options["queues"] or ["default"]
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
        try:
            app = get_app()
            self.stdout.write(f"pageq worker: queues={','.join(queues)} app={settings.PAGEQ_APP}")
            self.stdout.flush()
            code = app.run_worker(queues, options["concurrency"], lease=options["lease"])
        except (PageqError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if code:
            raise CommandError(f"the worker exited with code {code}")
