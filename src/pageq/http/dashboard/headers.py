"""Security headers of every response the server sends, and a Content-Security-Policy with a fresh nonce on
every HTML response (the pages put it on their scripts and styles; nothing inline runs without it)."""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NONCE_KEY = "csp_nonce"
RELAXED_STYLES_KEY = "csp_relaxed_styles"


def policy(nonce: str, *, relaxed_styles: bool = False) -> str:
    """The page may load scripts only with the nonce, styles, images and fonts only from this server, connect
    only back to it (the event stream), and submit forms only to it; no frames, plugins or base changes.
    ``relaxed_styles`` (the OpenAPI docs page, whose bundle sets inline styles) allows inline styles."""
    styles = "'self' 'unsafe-inline'" if relaxed_styles else f"'self' 'nonce-{nonce}'"
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}' 'strict-dynamic'; style-src {styles}; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
HTML = [
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]


class SecurityHeaders:
    """ASGI middleware: a nonce for each request (``request.state.csp_nonce``), then the headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        nonce = state[NONCE_KEY] = secrets.token_urlsafe(18)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                names = {k.lower() for k, _ in headers}
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                extra = list(COMMON)
                if content_type.startswith(b"text/html"):
                    relaxed = bool(state.get(RELAXED_STYLES_KEY))
                    csp = policy(nonce, relaxed_styles=relaxed).encode()
                    extra += [(b"content-security-policy", csp), *HTML]
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
