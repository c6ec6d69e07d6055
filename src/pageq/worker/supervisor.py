"""Running workers as processes: one in the foreground with signal handling, or several supervised."""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.worker.daemon import Worker

log = logging.getLogger("pageq.worker")


def run_forever(worker: Worker) -> int:
    """Run ``worker`` until SIGTERM/SIGINT (drain), a second signal stopping it at once."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            log.info("signal received: %s", "stopping now" if signals > 1 else "draining")
            worker.stop(immediate=signals > 1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await worker.run()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    if any(t.name.startswith("pageq-job") and t.is_alive() for t in threading.enumerate()):
        # a sync handler still runs in a thread after its job was released: do not wait for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (faster), unless ``PAGEQ_LOOP=asyncio``."""
    if os.environ.get("PAGEQ_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def load_app(ref: str) -> App:
    """Import ``module:attribute`` and return the App it names."""
    from pageq.app import App

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"app reference {ref!r} must look like 'module:attribute'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(app, App):
        raise ValueError(f"{ref!r} is not a pageq.App")
    return app


def _child(ref: str, queues: Sequence[str], concurrency: int, options: dict[str, Any]) -> None:
    os.setpgrp()  # the terminal's Ctrl-C goes to the supervisor, which forwards one signal
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    app = load_app(ref)
    run_forever(app.worker(queues, concurrency, **options))


def supervise(
    ref: str, queues: Sequence[str], concurrency: int, processes: int, options: dict[str, Any]
) -> int:
    """Start ``processes`` worker processes, restart any that crash, forward SIGTERM/SIGINT."""
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    children: list[multiprocessing.process.BaseProcess] = []

    def spawn() -> multiprocessing.process.BaseProcess:
        child = ctx.Process(target=_child, args=(ref, list(queues), concurrency, options), daemon=False)
        child.start()
        return child

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            if child.pid and child.is_alive():
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    children.extend(spawn() for _ in range(processes))
    while any(child.is_alive() for child in children):
        for i, child in enumerate(children):
            if not child.is_alive() and not stopping.is_set():
                log.warning("worker process %s exited with %s; restarting", child.pid, child.exitcode)
                time.sleep(0.5)
                children[i] = spawn()
        time.sleep(0.2)
    return 0
