"""A Python client of pageq's HTTP API, for services that reach pageq only over HTTP: enqueue, inspect,
and work jobs with `RemoteWorker`.

Example::

    from pageq.remote import Client, RemoteWorker

    with Client("https://pageq.internal", token="pq_...") as client:
        job_id = client.enqueue("email.send", {"to": "a@example.com"}, idempotency_key="order-7")
        RemoteWorker(client, {"email.send": send_email}, queues=["emails"]).run(max_jobs=100)
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from pageq.errors import NonRetryableError
from pageq.security.signing import SigningKey, authorization

log = logging.getLogger("pageq.remote")
Json = dict[str, Any]


class RemoteError(Exception):
    """The API answered an error: ``status`` and the RFC 9457 ``problem`` (with its ``code``)."""

    def __init__(self, status: int, problem: Json) -> None:
        super().__init__(f"{status} {problem.get('code', '')}: {problem.get('detail', '')}")
        self.status, self.problem = status, problem

    @property
    def code(self) -> str:
        return str(self.problem.get("code", ""))


class Client:
    """Calls the API with a bearer ``token`` or, with ``signing_key``, signed requests (``PQ-HMAC-SHA256``).

    ``transport`` and ``verify`` pass to httpx (an ASGI transport in tests, a CA bundle for TLS).
    """

    def __init__(
        self, url: str, token: str | None = None, *, signing_key: SigningKey | None = None,
        timeout: float = 30.0, verify: bool | str = True, transport: httpx.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        if (token is None) == (signing_key is None):
            raise ValueError("give a token or a signing key")
        self._token, self._key = token, signing_key
        self._http = httpx.Client(base_url=url, timeout=timeout, verify=verify, transport=transport)

    def __repr__(self) -> str:
        return f"Client({str(self._http.base_url)!r})"  # never the token

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] = {}) -> Any:
        """Send one request; the decoded JSON answer, or `RemoteError`."""
        request = self._http.build_request(method, path, json=body, headers=dict(headers))
        if self._key is not None:
            target = request.url.raw_path.decode("ascii")
            signed = authorization(self._key, method, target, request.content, time.time())
            request.headers["Authorization"] = signed
        else:
            request.headers["Authorization"] = f"Bearer {self._token}"
        response = self._http.send(request)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            raise RemoteError(response.status_code, problem if isinstance(problem, dict) else {})
        return response.json()

    # ----- producing
    def enqueue(
        self, task: str, args: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None,
        **options: Any,
    ) -> int:  # fmt: skip
        """Enqueue one job (options: queue, priority, delay, run_at, max_attempts, timeout); its id."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"task": task, "args": dict(args or {}), **_options(options)}
        return int(self.request("POST", "/v1/jobs", body, headers=headers)["id"])

    def enqueue_many(
        self, jobs: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[int]:
        """Enqueue jobs (each ``{"task": ..., "args": ..., options}``) all or none; their ids in order."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"jobs": [{**job, **_options(dict(job))} for job in jobs]}
        return [int(i) for i in self.request("POST", "/v1/jobs/batch", body, headers=headers)["ids"]]

    # ----- inspecting and managing
    def get_job(self, job_id: int) -> Json:
        return dict(self.request("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(self, **filters: Any) -> Json:
        """One page: filters state, queue, task, created_after, created_before, cursor, limit."""
        params = {
            k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filters.items() if v is not None
        }
        query = httpx.QueryParams(params)
        return dict(self.request("GET", f"/v1/jobs?{query}" if params else "/v1/jobs"))

    def iter_jobs(self, **filters: Any) -> Iterator[Json]:
        """Every job matching the filters, newest first, page after page."""
        cursor = None
        while True:
            page = self.list_jobs(**filters, cursor=cursor)
            yield from page["jobs"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def cancel(self, job_id: int) -> Json:
        return dict(self.request("POST", f"/v1/jobs/{job_id}/cancel"))

    def requeue(self, job_id: int) -> Json:
        return dict(self.request("POST", f"/v1/jobs/{job_id}/requeue"))

    def queues(self) -> list[Json]:
        return list(self.request("GET", "/v1/queues")["queues"])

    def pause_queue(self, name: str) -> Json:
        return dict(self.request("POST", f"/v1/queues/{name}/pause"))

    def resume_queue(self, name: str) -> Json:
        return dict(self.request("POST", f"/v1/queues/{name}/resume"))

    # ----- working
    def claim(
        self, queues: Sequence[str], *, limit: int = 10, lease: float = 30.0, worker: str = "remote",
        tasks: Sequence[str] | None = None,
    ) -> list[Json]:  # fmt: skip
        body: Json = {"queues": list(queues), "limit": limit, "lease": lease, "worker": worker}
        if tasks is not None:
            body["tasks"] = list(tasks)
        return list(self.request("POST", "/v1/claims", body)["jobs"])

    def heartbeat(self, job_id: int, lease_token: str, lease: float = 30.0) -> Json:
        return dict(
            self.request("POST", f"/v1/jobs/{job_id}/heartbeat", {"lease_token": lease_token, "lease": lease})
        )

    def complete(self, job_id: int, lease_token: str, result: Any = None) -> Json:
        return dict(
            self.request(
                "POST", f"/v1/jobs/{job_id}/complete", {"lease_token": lease_token, "result": result}
            )
        )

    def fail(
        self, job_id: int, lease_token: str, error: str, *, traceback: str | None = None,
        retry_in: float | None = None, retryable: bool = True,
    ) -> Json:  # fmt: skip
        body = {"lease_token": lease_token, "error": error, "traceback": traceback, "retry_in": retry_in,
                "retryable": retryable}  # fmt: skip
        return dict(self.request("POST", f"/v1/jobs/{job_id}/fail", body))

    def release(self, job_id: int, lease_token: str) -> Json:
        return dict(self.request("POST", f"/v1/jobs/{job_id}/release", {"lease_token": lease_token}))


def _options(options: Mapping[str, Any]) -> Json:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in options.items() if v is not None}


class RemoteWorker:
    """Works jobs over HTTP: claims up to ``concurrency`` jobs of ``queues``, runs each with its handler
    (``handlers[task](**args)``) in a thread, heartbeats while it runs, then completes or fails it (a
    `pageq.NonRetryableError` fails it for good). A job whose lease was lost meanwhile is dropped (409)."""

    def __init__(
        self, client: Client, handlers: Mapping[str, Callable[..., Any]], queues: Sequence[str], *,
        concurrency: int = 4, lease: float = 30.0, poll_interval: float = 1.0, worker: str = "remote",
    ) -> None:  # fmt: skip
        self.client, self.handlers, self.queues = client, dict(handlers), list(queues)
        self.concurrency, self.lease, self.poll_interval, self.worker = (
            concurrency,
            lease,
            poll_interval,
            worker,
        )
        self.done = self.failed = self.lost = 0
        self._stop = threading.Event()
        self._finished = threading.Event()  # the heartbeats go on after `stop` until running jobs finish
        self._held: dict[int, str] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_jobs: int | None = None, idle_exit: bool = False) -> None:
        """Work until `stop` (or ``max_jobs`` finished, or, with ``idle_exit``, the queues are empty)."""
        self._finished.clear()
        beat = threading.Thread(target=self._heartbeats, name="pageq-remote-heartbeat", daemon=True)
        beat.start()
        try:
            self._loop(max_jobs, idle_exit)  # leaving the pool's block waits for the running jobs
        finally:
            self._stop.set()
            self._finished.set()
            beat.join()

    def _loop(self, max_jobs: int | None, idle_exit: bool) -> None:
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="pageq-remote") as pool:
            running: set[Future[None]] = set()
            while not self._stop.is_set():
                running = {f for f in running if not f.done()}
                free = self.concurrency - len(running)
                if max_jobs is not None:
                    free = min(free, max_jobs - self.done - self.failed - self.lost - len(running))
                    if free <= 0 and not running:
                        break
                jobs = self._claim(free) if free > 0 else []
                for job in jobs:
                    running.add(pool.submit(self._work, job))
                if not jobs:
                    if idle_exit and not running:
                        break
                    self._stop.wait(self.poll_interval if free > 0 else 0.01)

    def _claim(self, limit: int) -> list[Json]:
        tasks = sorted(self.handlers)
        jobs = self.client.claim(self.queues, limit=limit, lease=self.lease, worker=self.worker, tasks=tasks)
        with self._lock:
            self._held.update({job["id"]: job["lease_token"] for job in jobs})
        return jobs

    def _work(self, job: Json) -> None:
        try:
            result = self.handlers[job["task"]](**job["args"])
        except Exception as exc:
            self._ack(job, "fail", exc)
        else:
            self._ack(job, "complete", result)

    def _ack(self, job: Json, kind: str, value: Any) -> None:
        with self._lock:
            self._held.pop(job["id"], None)
        try:
            if kind == "complete":
                self.client.complete(job["id"], job["lease_token"], value)
                self.done += 1
            else:
                text = "".join(traceback.format_exception(value))
                error, permanent = f"{type(value).__name__}: {value}", isinstance(value, NonRetryableError)
                self.client.fail(
                    job["id"], job["lease_token"], error, traceback=text, retryable=not permanent
                )
                self.failed += 1
        except RemoteError as exc:
            if exc.status != 409:
                raise
            self.lost += 1
            log.warning("job %s: lease lost before its %s", job["id"], kind)

    def _heartbeats(self) -> None:
        while not self._finished.wait(self.lease / 3):
            with self._lock:
                held = dict(self._held)
            for job_id, token in held.items():
                try:
                    self.client.heartbeat(job_id, token, self.lease)
                except RemoteError as exc:
                    log.warning("job %s: heartbeat refused (%s)", job_id, exc)
                except httpx.HTTPError as exc:
                    log.warning("heartbeat failed: %s", exc)


__all__ = ["Client", "RemoteError", "RemoteWorker", "SigningKey"]
