"""API tokens: high-entropy random strings, kept by the database only as SHA-256 hashes. Pure."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "pq_"


def new_token() -> str:
    """A new token: 256 random bits, URL-safe. Shown once; only its hash is stored."""
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What the database stores and looks tokens up by (a fast hash suits 256-bit random secrets)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_hint(token: str) -> str:
    """A few characters to tell tokens apart in listings (never enough to guess one)."""
    return token[: len(PREFIX) + 4] + "..."
