"""The built-in delivery task: POST one event to one webhook, signed, through the address guard, and log it.

A 2xx answer completes the job, and its log row commits with that completion; anything else is logged and
retried with the app's backoff until the webhook's ``max_attempts``, then the delivery is dead (the DLQ:
``pageq dlq requeue --queue pageq.webhooks`` sends it again, same delivery id). An address the guard refuses,
or a secret this worker cannot decrypt, kills the delivery at once (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import socket
import ssl
import time
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlunsplit

import httpx

from pageq.errors import NonRetryableError, PageqError
from pageq.security.crypto import DecryptError, is_encrypted
from pageq.security.ssrf import check_url, refusal
from pageq.security.webhook import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, WEBHOOK_HEADER, sign
from pageq.store import hookops
from pageq.task import Task, TaskOptions
from pageq.webhooks.settings import QUEUE, TASK, WebhookSettings

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.context import Context
    from pageq.store import Store

log = logging.getLogger("pageq.webhooks")
MAX_ERROR = 500
MAX_ANSWER = 64 * 1024


class DeliveryRefused(NonRetryableError):
    """The webhook's host resolves to an address the guard refuses (loopback, private, link-local...)."""

    reason = "refused"


class DeliveryFailed(PageqError):
    """The receiver did not answer 2xx (or could not be reached): retried with backoff."""


SECRET_PURPOSE = "webhook.secret"
"""What a webhook's encrypted secret is bound to (with the webhook's id), so it cannot be moved elsewhere."""


def reveal_secret(app: App, webhook: int, stored: Any) -> str:
    """A webhook's secret as stored (clear text, or an envelope this app's keyring opens)."""
    if not is_encrypted(stored):
        return str(stored)
    if app.keyring is None:
        raise DecryptError(f"the secret of webhook {webhook} is encrypted and this worker has no keyring")
    return str(app.keyring.decrypt(stored, SECRET_PURPOSE, webhook, QUEUE, TASK))


async def resolve(parts: SplitResult, settings: WebhookSettings) -> str:
    """The address to connect to: every address the host resolves to must pass the guard."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with contextlib.suppress(ValueError):  # an address already: nothing to resolve
        literal = str(ipaddress.ip_address(host))
        why = refusal(literal, settings.networks)
        if why is not None:
            raise DeliveryRefused(f"refused {host}: {why}")
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), settings.resolve_timeout
        )
    except (OSError, TimeoutError) as exc:
        raise DeliveryFailed(f"cannot resolve {host}: {exc or type(exc).__name__}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise DeliveryFailed(f"{host} resolves to no address")
    for address in addresses:
        why = refusal(address, settings.networks)
        if why is not None:
            raise DeliveryRefused(f"refused {host}: {why}")
    return addresses[0]


def pinned(parts: SplitResult, address: str) -> str:
    """The URL with its host replaced by the checked address (no second resolution to trick the guard)."""
    host = f"[{address}]" if ":" in address else address
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


async def deliver(ctx: Context, webhook: int, event: dict[str, Any]) -> dict[str, Any]:
    """The handler of `TASK`: one attempt at delivering ``event`` to webhook ``webhook``."""
    app, store, job = ctx.app, ctx._store, ctx.job
    now = app.clock.now()
    entry = hookops.Attempt(webhook, job.id, int(event.get("id") or 0), str(event.get("type") or ""),
                            ctx.attempt, now, "failed")  # fmt: skip
    job_id = event.get("job", {}).get("id") if isinstance(event.get("job"), dict) else None
    target = await store.arun(hookops.target(webhook, now, (entry.event, int(job_id or 0), entry.event_type)))
    if target is None:
        return {"skipped": "deleted"}
    url, enabled, timeout, secret, old_secret, recorded = target
    if not enabled:
        await store.arun(hookops.log(replace(entry, outcome="skipped", error="the webhook is disabled")))
        return {"skipped": "disabled"}
    try:
        if not recorded:  # written by hand into the queue: pageq signs only what its audit trail recorded
            raise DeliveryRefused(f"event {entry.event} ({entry.event_type}) is not in the audit trail")
        keys = [reveal_secret(app, webhook, s) for s in (secret, old_secret) if s is not None]
        parts = check_url(url)
        address = await resolve(parts, app.webhook_settings)
    except DeliveryRefused as exc:
        await _failed(store, replace(entry, outcome="refused"), exc)
        raise
    except (DecryptError, PageqError) as exc:
        await _failed(store, entry, exc)
        raise
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json", "User-Agent": "pageq-webhooks", "Host": parts.netloc,
        SIGNATURE_HEADER: sign(body, keys, int(now.timestamp())), DELIVERY_HEADER: str(job.id),
        EVENT_HEADER: entry.event_type, WEBHOOK_HEADER: str(webhook),
    }  # fmt: skip
    started = time.perf_counter()
    status = await _post(pinned(parts, address), body, headers, parts, float(timeout), store, entry)
    entry = replace(entry, status=status, latency=time.perf_counter() - started)
    if 200 <= status < 300:
        # logged on its own: should the completion be lost (a lost lease), the retry's row shows the
        # receiver got it twice, which is what happened
        await store.arun(hookops.log(replace(entry, outcome="delivered")))
        return {"status": status}
    error = DeliveryFailed(f"the receiver answered HTTP {status}")
    await _failed(store, entry, error)
    raise error


async def _post(
    url: str, body: bytes, headers: dict[str, str], parts: SplitResult, timeout: float, store: Store,
    entry: hookops.Attempt,
) -> int:  # fmt: skip
    """POST without following redirects (a redirect could lead past the guard), proxies or netrc; the
    status code (the answer's body is read only to keep the connection, never kept)."""
    sni = {"sni_hostname": parts.hostname} if parts.scheme == "https" and parts.hostname else None
    started = time.perf_counter()
    client = _client((parts.scheme, parts.hostname or "", url.split("/", 3)[2]))
    try:
        async with client.stream(
            "POST", url, content=body, headers=headers, extensions=sni, timeout=timeout
        ) as response:
            await _drain(response)
            return response.status_code
    except httpx.HTTPError as exc:
        failure = DeliveryFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        await _failed(store, replace(entry, latency=time.perf_counter() - started), failure)
        raise failure from None


async def _drain(response: httpx.Response) -> None:
    """Read (and drop) a small answer, so that its connection can serve the next delivery; a big one is not
    read past `MAX_ANSWER` bytes (its connection is closed instead)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > MAX_ANSWER:
            return


ClientKey = tuple[str, str, str]
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ClientKey, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
MAX_CLIENTS = 64


def _client(key: ClientKey) -> httpx.AsyncClient:
    """A client per (scheme, host name, checked address and port) on this event loop, kept for its
    connections (keep-alive); the host name is part of the key because TLS checks it (SNI)."""
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    client = clients.pop(key, None)
    if client is None:
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls())
        if len(clients) >= MAX_CLIENTS:
            oldest = clients.pop(next(iter(clients)))
            asyncio.get_running_loop().create_task(oldest.aclose())
    clients[key] = client  # most recently used last
    return client


async def close_clients() -> None:
    """Close the delivery clients of this event loop (a worker that stops)."""
    for client in _CLIENTS.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, hostname checks), made once: it takes ~50 ms to build."""
    return httpx.create_ssl_context()


async def _failed(store: Store, entry: hookops.Attempt, exc: BaseException) -> None:
    try:
        await store.arun(hookops.log(replace(entry, error=str(exc)[:MAX_ERROR])))
    except PageqError as err:  # the attempt goes on failing or retrying; only its log row is lost
        log.warning("could not log a delivery of webhook %d: %s", entry.webhook, err)
    log.info("delivery %d to webhook %d: %s", entry.delivery, entry.webhook, exc)


def install(app: App) -> None:
    """Register the delivery task on ``app`` (a worker that serves the deliveries' queue does)."""
    if TASK not in app.tasks:
        options = TaskOptions(queue=QUEUE, max_attempts=16)
        retry = app.webhook_settings.retry
        app.tasks[TASK] = Task(app, deliver, TASK, options, retry, "async", accept_clear=True)
