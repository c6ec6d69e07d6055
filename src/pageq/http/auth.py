"""Who is calling: a bearer token or a signed request, then the per-principal request rate. Each check
fails closed with a 401 (or 429) problem."""

from __future__ import annotations

import re
import threading
import time

from starlette.requests import Request

import pageq
from pageq.http.problems import BEARER, Problem
from pageq.http.settings import Settings
from pageq.security import signing

TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{8,256}$")


class RateLimiter:
    """A token bucket per principal: ``rate`` requests per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait(self, principal: str) -> float:
        """0 if the request may go now (and it is counted), else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(principal, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - last) * self._rate)
            if tokens >= 1:
                self._buckets[principal] = (tokens - 1, now)
                return 0.0
            self._buckets[principal] = (tokens, now)
            return (1 - tokens) / self._rate


class Authenticator:
    """Turns a request's credentials into the served app acting as their principal."""

    def __init__(self, app: pageq.App, settings: Settings) -> None:
        self._app, self._settings = app, settings
        self._limiter = RateLimiter(settings.rate, settings.burst) if settings.rate else None

    def acting(self, request: Request, body: bytes) -> pageq.App:
        """The app acting as the caller (blocking: run it in a thread)."""
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and TOKEN_RE.match(credentials.strip()):
            return self.bearer(credentials.strip())
        if scheme == signing.SCHEME:
            return self._limited(self._signed(request, credentials, body))
        if not header:
            raise Problem(401, "unauthenticated", "credentials are required", headers=BEARER)
        raise Problem(401, "unauthenticated", "malformed Authorization header", headers=BEARER)

    def bearer(self, token: str, *, limited: bool = True) -> pageq.App:
        """The app acting as the owner of ``token`` (the dashboard's session cookie holds one):
        `AuthenticationError` when it is malformed, unknown, revoked or its principal disabled (answers are
        reused at most half a second, so a revocation applies within a second). ``limited``: the request
        counts against the principal's rate (the dashboard's event stream re-checks without counting)."""
        if not TOKEN_RE.match(token):
            raise pageq.AuthenticationError("malformed token")
        principal = self._app.authenticate(token)
        return self._limited(principal) if limited else self._app.acting_as(principal)

    def _limited(self, principal: str) -> pageq.App:
        if self._limiter is not None:
            wait = self._limiter.wait(principal)
            if wait > 0:
                retry = str(max(1, round(wait + 0.5)))
                raise Problem(429, "rate_limited", "too many requests", headers={"Retry-After": retry})
        return self._app.acting_as(principal)

    def _signed(self, request: Request, credentials: str, body: bytes) -> str:
        signed = signing.parse(credentials)
        key = self._settings.signing_keys.get(signed.key_id)
        if key is None:
            raise pageq.AuthenticationError("unknown signing key")
        target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        if request.url.query:
            target += "?" + request.scope["query_string"].decode("latin-1")
        now = self._app.clock.now().timestamp()
        signing.verify(key, signed, request.method, target, body, now)
        if not self._app.security.use_nonce(key.key_id, signed.nonce, 2 * signing.WINDOW):
            raise pageq.AuthenticationError("replayed request (nonce already seen)")
        return key.principal
