"""FastAPI: open and close a pageq App with the web app's lifespan (optionally migrating its schema and
running a worker in the same process), and a dependency that hands handlers the App.
Docs: docs/integrations/fastapi.md.

Example::

    queue = pageq.contrib.fastapi.Pageq(app, migrate=True)
    api = FastAPI(lifespan=queue.lifespan)

    @api.post("/signup")
    async def signup(email: str, jobs: Annotated[pageq.App, Depends(queue)]) -> dict[str, int]:
        return {"job": await jobs.get_task("send_welcome").enqueue_async(to=email)}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pageq.app import App
from pageq.errors import ConfigError

log = logging.getLogger("pageq.contrib.fastapi")


class Pageq:
    """A pageq App tied to a FastAPI app: ``FastAPI(lifespan=queue.lifespan)``, ``Depends(queue)``.

    ``migrate``: apply pending migrations at start-up. ``worker``: queues to serve with a worker in the web
    process (``None``: none; run ``pageq worker`` apart, which suits production better), with
    ``concurrency`` and further `pageq.WorkerOptions` in ``worker_options``. At shutdown the worker drains
    (its running jobs finish) and the App's connection pools close.
    """

    def __init__(
        self, app: App, *, migrate: bool = False, worker: Sequence[str] | None = None, concurrency: int = 10,
        **worker_options: Any,
    ) -> None:  # fmt: skip
        self.app = app
        self._migrate = migrate
        self._queues = None if worker is None else list(worker)
        self._concurrency = concurrency
        self._options = worker_options
        self._open = False

    @contextlib.asynccontextmanager
    async def lifespan(self, _api: object = None) -> AsyncIterator[dict[str, App]]:
        """The lifespan to give FastAPI (or to enter from your own); its state holds ``{"pageq": app}``."""
        if self._migrate:
            applied = await asyncio.to_thread(self.app.migrate)
            if applied:
                log.info("pageq: applied migrations %s", applied)
        running: asyncio.Task[None] | None = None
        worker = None
        if self._queues is not None:
            worker = self.app.worker(self._queues, self._concurrency, **self._options)
            running = asyncio.create_task(worker.run(), name="pageq-worker")
        self._open = True
        try:
            yield {"pageq": self.app}
        finally:
            self._open = False
            if worker is not None and running is not None:
                worker.stop()
                await running
            await self.app.aclose()
            await asyncio.to_thread(self.app.close)

    def __call__(self) -> App:
        """The dependency: ``jobs: Annotated[pageq.App, Depends(queue)]``."""
        if not self._open:
            raise ConfigError("the pageq App is not open: give FastAPI lifespan=queue.lifespan")
        return self.app


__all__ = ["Pageq"]
