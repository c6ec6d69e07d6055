"""Signed webhook deliveries (Stripe's scheme): sign on the way out, verify at the receiver. Pure.

A delivery carries ``Pageq-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]`` where each ``v1`` is
``hex(HMAC-SHA256(secret, "<t>.<raw body>"))`` under one of the webhook's secrets (two while a rotation
lasts), and ``Pageq-Delivery: <id>``, the same on every retry of one delivery (receivers deduplicate by it).
The secret is the text pageq shows once (``whsec_...``); its UTF-8 bytes are the HMAC key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pageq.errors import AuthenticationError

SIGNATURE_HEADER = "Pageq-Signature"
DELIVERY_HEADER = "Pageq-Delivery"
EVENT_HEADER = "Pageq-Event"
WEBHOOK_HEADER = "Pageq-Webhook"
TOLERANCE = 300
"""Seconds a signature stays valid on either side of the receiver's clock (Stripe's default)."""
SECRET_PREFIX = "whsec_"
MAX_HEADER = 1024


class SignatureError(AuthenticationError):
    """A webhook delivery whose signature does not verify: missing or malformed header, wrong secret,
    altered body, or a timestamp outside the tolerance."""


def new_secret() -> str:
    """A new random webhook secret (256 bits): ``whsec_`` and 43 URL-safe characters."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """``hex(HMAC-SHA256(secret, "<timestamp>.<body>"))``."""
    return hmac.new(_key(secret), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets_: Sequence[str | bytes], timestamp: int) -> str:
    """The ``Pageq-Signature`` value: one ``v1`` per secret (the current one first)."""
    return ",".join([f"t={timestamp}", *(f"v1={signature(s, timestamp, body)}" for s in secrets_)])


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _parse(value: str) -> tuple[int, list[bytes]]:
    if len(value) > MAX_HEADER:
        raise SignatureError("the signature header is too long")
    stamp: int | None = None
    found: list[bytes] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if key == "t":
            if stamp is not None or not item.isascii() or not item.isdigit() or len(item) > 12:
                raise SignatureError("malformed signature header")
            stamp = int(item)
        elif key == "v1":
            found.append(item.encode("utf-8", "replace"))  # bytes: compare_digest refuses non-ASCII text
    if stamp is None or not found:
        raise SignatureError("malformed signature header: it needs t= and v1=")
    return stamp, found


def verify(
    headers: Mapping[str, str], body: bytes, secret: str | bytes | Sequence[str | bytes],
    tolerance: float = TOLERANCE, *, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Check a delivery's ``Pageq-Signature`` over the raw ``body`` and return the event it carries.

    ``secret`` may be a list (two secrets while you rotate yours); any ``v1`` matching any of them passes.
    Raises `SignatureError` on a missing or malformed header, a timestamp more than ``tolerance`` seconds
    away from ``now`` (default: the clock), or no matching signature. Deduplicate by the
    ``Pageq-Delivery`` header: a delivery may arrive more than once.

    Example::

        event = pageq.webhooks.verify(request.headers, raw_body, "whsec_...")
    """
    value = _header(headers, SIGNATURE_HEADER)
    if value is None:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    stamp, given = _parse(value)
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        raise SignatureError(f"the signature's timestamp is more than {tolerance:g} s away")
    keys = [secret] if isinstance(secret, str | bytes) else list(secret)
    expected = [signature(key, stamp, body).encode() for key in keys]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise SignatureError("no signature matches (wrong secret, or an altered body)")
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        event = None
    if not isinstance(event, dict):
        raise SignatureError("the body is not a JSON object")
    return event


def hint(secret: str) -> str:
    """What operators see of a secret: its prefix and last four characters."""
    return f"{secret[: len(SECRET_PREFIX)]}...{secret[-4:]}" if len(secret) > 12 else "..."
