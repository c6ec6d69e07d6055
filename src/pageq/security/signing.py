"""Signed HTTP requests: HMAC-SHA256 over the method, path, time, a nonce and the body's hash. Pure.

The client sends ``Authorization: PQ-HMAC-SHA256 key=<key id>,ts=<unix seconds>,nonce=<random>,sig=<hex>``
where ``sig = hex(HMAC-SHA256(secret, canonical))`` and ``canonical`` is::

    METHOD \\n PATH[?QUERY] \\n TS \\n NONCE \\n hex(SHA-256(body))

The server accepts a request whose ``ts`` is within `WINDOW` seconds of its clock and whose nonce it has not
seen for that key (it keeps nonces for twice the window), so a captured request can neither be altered nor
replayed. Signing keys are shared secrets configured on both sides (never stored in the database).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pageq.errors import AuthenticationError, ConfigError

SCHEME = "PQ-HMAC-SHA256"
WINDOW = 300
"""Seconds a signed request stays valid on either side of the server's clock (as AWS SigV4's 5 minutes)."""

KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
NONCE_RE = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
PRINCIPAL_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,47}$")
_FIELD_RE = re.compile(r"^(key|ts|nonce|sig)=([^,=\s]+)$")


@dataclass(frozen=True)
class SigningKey:
    """A shared secret with its id, and the principal that requests signed with it act as."""

    key_id: str
    principal: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Signed:
    """The parsed fields of a signed request's Authorization header."""

    key_id: str
    ts: int
    nonce: str
    sig: str


def canonical(method: str, target: str, ts: int, nonce: str, body: bytes) -> bytes:
    """What is signed. ``target`` is the path with its query string, exactly as sent."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{target}\n{ts}\n{nonce}\n{digest}".encode()


def signature(secret: bytes, method: str, target: str, ts: int, nonce: str, body: bytes) -> str:
    return hmac.new(secret, canonical(method, target, ts, nonce, body), hashlib.sha256).hexdigest()


def authorization(key: SigningKey, method: str, target: str, body: bytes, now: float) -> str:
    """The Authorization header value of a request signed now with ``key`` (a fresh nonce)."""
    ts, nonce = int(now), secrets.token_urlsafe(18)
    sig = signature(key.secret, method, target, ts, nonce, body)
    return f"{SCHEME} key={key.key_id},ts={ts},nonce={nonce},sig={sig}"


def parse(credentials: str) -> Signed:
    """The fields after the scheme; `AuthenticationError` when malformed."""
    found: dict[str, str] = {}
    for part in credentials.split(","):
        match = _FIELD_RE.match(part.strip())
        if match is None or match.group(1) in found:
            raise AuthenticationError("malformed signature header")
        found[match.group(1)] = match.group(2)
    if set(found) != {"key", "ts", "nonce", "sig"} or not found["ts"].isdigit() or len(found["ts"]) > 12:
        raise AuthenticationError("malformed signature header")
    if not KEY_ID_RE.match(found["key"]) or not NONCE_RE.match(found["nonce"]):
        raise AuthenticationError("malformed signature header")
    return Signed(found["key"], int(found["ts"]), found["nonce"], found["sig"])


def verify(key: SigningKey, signed: Signed, method: str, target: str, body: bytes, now: float) -> None:
    """`AuthenticationError` unless the signature matches and the time is within the window (the caller
    then checks the nonce)."""
    if abs(now - signed.ts) > WINDOW:
        raise AuthenticationError(f"signed request outside the {WINDOW} s window")
    expected = signature(key.secret, method, target, signed.ts, signed.nonce, body)
    if not hmac.compare_digest(expected, signed.sig):
        raise AuthenticationError("bad signature")


def load_keys(text: str) -> dict[str, SigningKey]:
    """Keys from ``key_id:principal:base64secret`` entries separated by ``;`` or new lines (``#`` comments),
    as in ``PAGEQ_HTTP_KEYS`` or the file named by ``PAGEQ_HTTP_KEYS_FILE``."""
    keys: dict[str, SigningKey] = {}
    for raw in re.split(r"[;\n]", text):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        key_id, _, rest = entry.partition(":")
        principal, _, encoded = rest.partition(":")
        if not KEY_ID_RE.match(key_id) or not PRINCIPAL_RE.match(principal):
            raise ConfigError("signing keys must look like key_id:principal:base64secret")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"signing key {key_id!r}: the secret is not base64") from None
        if len(secret) < 32:
            raise ConfigError(f"signing key {key_id!r}: the secret must have at least 32 bytes")
        if key_id in keys:
            raise ConfigError(f"signing key {key_id!r} is given twice")
        keys[key_id] = SigningKey(key_id, principal, secret)
    return keys


def keys_from_env(environ: dict[str, str]) -> dict[str, SigningKey]:
    """``PAGEQ_HTTP_KEYS``, else the file named by ``PAGEQ_HTTP_KEYS_FILE``, else none."""
    if environ.get("PAGEQ_HTTP_KEYS"):
        return load_keys(environ["PAGEQ_HTTP_KEYS"])
    if environ.get("PAGEQ_HTTP_KEYS_FILE"):
        return load_keys(Path(environ["PAGEQ_HTTP_KEYS_FILE"]).read_text())
    return {}
