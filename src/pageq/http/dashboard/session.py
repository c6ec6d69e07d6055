"""Who is looking: the session cookie (it holds the login token, checked at every request by the API's
authenticator, so that a revoked token stops working within a second), and the CSRF defences of every
state-changing request: ``Sec-Fetch-Site: same-origin`` (as Sidekiq 8 does) *and* a token derived from the
session that a page of another origin cannot read."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import Response

import pageq
from pageq.http.route import Served

COOKIE = "pageq_session"
SECURE_COOKIE = "__Host-pageq_session"  # over TLS: Secure, path /, no domain, enforced by the browser
LOGIN_COOKIE = "pageq_login"
FLASH_COOKIE = "pageq_flash"
MAX_FORM = 64 * 1024
LOCAL_PATH = re.compile(r"^/(?![/\\])[A-Za-z0-9_\-./:?=&%+,~]*$")


class Forbidden(Exception):
    """A state-changing request that fails a CSRF check, or an action the viewer's grants refuse: 403."""


class LoginRequired(Exception):
    """No session, or its token no longer works: back to the login page."""


@dataclass(frozen=True)
class Viewer:
    """A logged-in user: the app acting as its principal, and the CSRF token its forms must carry."""

    app: pageq.App
    principal: str
    csrf: str


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_name(request: Request) -> str:
    return SECURE_COOKIE if secure(request) else COOKIE


def csrf_token(token: str) -> str:
    """The CSRF token of a session: a MAC of a fixed label under the session's token (stateless, the same in
    every server process, useless without the cookie that another origin cannot read)."""
    return hmac.new(token.encode(), b"pageq dashboard csrf", hashlib.sha256).hexdigest()


def token_of(request: Request) -> str | None:
    return request.cookies.get(cookie_name(request))


def viewer(request: Request, *, limited: bool = True) -> Viewer:
    """The logged-in viewer (blocking: run it in a thread); `LoginRequired` otherwise. ``limited``: the
    request counts against the principal's rate."""
    served: Served = request.app.state.pageq
    token = token_of(request)
    if not token:
        raise LoginRequired
    try:
        acting = served.auth.bearer(token, limited=limited)
    except pageq.AuthenticationError:
        raise LoginRequired from None
    principal = acting.principal
    assert principal is not None
    return Viewer(acting, principal, csrf_token(token))


def same_origin(request: Request) -> None:
    """`Forbidden` unless the browser says the request comes from a page of this origin."""
    if request.headers.get("sec-fetch-site") != "same-origin":
        raise Forbidden("cross-origin request refused (Sec-Fetch-Site is not same-origin)")


async def form(request: Request) -> dict[str, list[str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body (at most 64 KiB)."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise Forbidden("a form must be application/x-www-form-urlencoded")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise Forbidden("the form is too large")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=2000, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Forbidden("the form is not valid") from None


def check_csrf(fields: dict[str, list[str]], expected: str) -> None:
    given = fields.get("csrf", [""])[0]
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("missing or wrong CSRF token")


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path of this site (never another origin: no scheme, no ``//``), else
    ``default``."""
    return value if value and LOCAL_PATH.match(value) else default


def login_url(request: Request) -> str:
    base = request.scope.get("root_path", "")
    here = request.url.path[len(base) :] + (f"?{request.url.query}" if request.url.query else "")
    return f"{base}/login?next={quote(local_path(here), safe='/')}"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        cookie_name(request), token, httponly=True, secure=secure(request), samesite="strict", path="/"
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        cookie_name(request), httponly=True, secure=secure(request), samesite="strict", path="/"
    )


def login_nonce(request: Request) -> str:
    """The double-submit value of the login form (there is no session yet to derive one from)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def set_login_nonce(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, value, httponly=True, secure=secure(request), samesite="strict", path="/", max_age=3600
    )


def flash(response: Response, request: Request, text: str, *, error: bool = False) -> None:
    """A one-line message shown by the next page (after the redirect of an action)."""
    value = quote(("!" if error else "") + text[:300], safe="")
    response.set_cookie(
        FLASH_COOKIE, value, httponly=True, secure=secure(request), samesite="strict", path="/", max_age=60
    )
