"""Payload encryption at rest: AES-256-GCM under a keyring, bound to its job. Pure (but `os.urandom`).

An encrypted value is stored as the JSON object
``{"$enc": "v1.<key id>.<base64(nonce | ciphertext | tag)>"}``.
The associated data binds it to its job (id, queue, task), to what it is (``args``, ``result``, ``error``) and
to its key id, so a ciphertext copied onto another job, or into another field, fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pageq.errors import ConfigError, NonRetryableError

MARK = "$enc"
VERSION = "v1"
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
NONCE = 12
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))  # made once: json.dumps with options
# builds a new encoder on every call


class _Nonces:
    """Random 96-bit nonces from the OS, fetched 1,024 at a time (one system call each, not one per value);
    a forked child never reuses its parent's buffer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._buffer = b""
        self._at = 0

    def take(self) -> bytes:
        with self._lock:
            if self._at >= len(self._buffer) or self._pid != os.getpid():
                self._buffer, self._at, self._pid = os.urandom(NONCE * 1024), 0, os.getpid()
            nonce = self._buffer[self._at : self._at + NONCE]
            self._at += NONCE
            return nonce


_NONCES = _Nonces()


class DecryptError(NonRetryableError):
    """A payload that cannot be decrypted (unknown key, tampered or moved ciphertext): the job goes to
    `dead` with reason ``decrypt_failed``."""

    reason = "decrypt_failed"


def is_encrypted(value: object) -> bool:
    """Whether a stored JSON value is an encryption envelope."""
    return type(value) is dict and MARK in value


def _sealed(value: object) -> list[str] | None:
    return str(value[MARK]).split(".") if isinstance(value, dict) and MARK in value else None


def key_id_of(value: object) -> str | None:
    """The key id of an envelope (None for a clear value)."""
    parts = _sealed(value)
    return parts[1] if parts is not None and len(parts) == 3 else None


def _aad(key_id: str, purpose: str, job_id: int, queue: str, task: str) -> bytes:
    return f"pageq|{VERSION}|{key_id}|{purpose}|{job_id}|{queue}|{task}".encode()


@dataclass(frozen=True, repr=False)
class Keyring:
    """Encryption keys by id: ``active`` encrypts, every key decrypts. Keys come from the environment or a
    file, never from the database.

    Example::

        ring = Keyring.parse("k2:" + new_key() + ";k1:" + old_key)   # the first key is the active one
    """

    keys: Mapping[str, bytes]
    active: str
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ConfigError(f"the active key id {self.active!r} is not in the keyring")
        for key_id, key in self.keys.items():
            if not KEY_ID_RE.match(key_id):
                raise ConfigError(f"invalid key id {key_id!r}: use 1-32 letters, digits, '_' or '-'")
            if len(key) != 32:
                raise ConfigError(f"key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
            self._ciphers[key_id] = AESGCM(key)

    def __repr__(self) -> str:
        return f"Keyring(active={self.active!r}, ids={sorted(self.keys)!r})"

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """``id:base64key`` entries separated by ``;``, commas or newlines; the first is the active key."""
        entries = [
            e.strip() for e in re.split(r"[;,\n]", text) if e.strip() and not e.strip().startswith("#")
        ]
        if not entries:
            raise ConfigError("the keyring is empty")
        keys: dict[str, bytes] = {}
        for entry in entries:
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise ConfigError("keyring entries look like 'id:base64key'")
            try:
                keys[key_id.strip()] = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"key {key_id.strip()!r} is not valid base64") from None
        return cls(keys, entries[0].partition(":")[0].strip())

    def with_active(self, key_id: str) -> Keyring:
        return Keyring(dict(self.keys), key_id)

    def _seal(self, plain: bytes, purpose: str, job_id: int, queue: str, task: str) -> str:
        nonce = _NONCES.take()
        aad = _aad(self.active, purpose, job_id, queue, task)
        body = binascii.b2a_base64(
            nonce + self._ciphers[self.active].encrypt(nonce, plain, aad), newline=False
        )
        return f"{VERSION}.{self.active}.{body.decode()}"

    def encrypt(self, value: Any, purpose: str, job_id: int, queue: str, task: str) -> dict[str, str]:
        """The envelope of a JSON value, bound to its job."""
        return {MARK: self._seal(_ENCODER.encode(value).encode(), purpose, job_id, queue, task)}

    def encrypt_json(self, text: str, purpose: str, job_id: int, queue: str, task: str) -> str:
        """`encrypt` of JSON text, returning JSON text (what the store writes)."""
        return '{"' + MARK + '":"' + self._seal(text.encode(), purpose, job_id, queue, task) + '"}'

    def decrypt(self, envelope: object, purpose: str, job_id: int, queue: str, task: str) -> Any:
        """The JSON value an envelope holds; `DecryptError` (which names no plaintext) when it cannot."""
        parts = _sealed(envelope)
        if parts is None:
            raise DecryptError(f"the {purpose} of job {job_id} is not an encryption envelope")
        if len(parts) != 3 or parts[0] != VERSION:
            raise DecryptError(f"the {purpose} of job {job_id} has an unknown envelope format")
        key_id = parts[1]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptError(
                f"the {purpose} of job {job_id} uses key {key_id!r}, which is not in the keyring"
            )
        try:
            raw = binascii.a2b_base64(parts[2])
            plain = cipher.decrypt(raw[:NONCE], raw[NONCE:], _aad(key_id, purpose, job_id, queue, task))
            return _DECODER.decode(plain.decode())
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            raise DecryptError(
                f"the {purpose} of job {job_id} failed authentication (tampered, or moved from another job)"
            ) from None

    def reencrypt(self, value: Any, purpose: str, job_id: int, queue: str, task: str) -> Any:
        """The value under the active key (unchanged when already so, or not encrypted)."""
        if not is_encrypted(value) or key_id_of(value) == self.active:
            return value
        return self.encrypt(self.decrypt(value, purpose, job_id, queue, task), purpose, job_id, queue, task)


def new_key() -> str:
    """A new random AES-256 key, base64-encoded (for a keyring entry)."""
    return base64.b64encode(os.urandom(32)).decode()


def keyring_from_env(environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The keyring of ``PAGEQ_KEYRING`` (entries) or ``PAGEQ_KEYRING_FILE`` (a file of entries), if any."""
    env = os.environ if environ is None else environ
    text = env.get("PAGEQ_KEYRING")
    if not text and env.get("PAGEQ_KEYRING_FILE"):
        path = Path(env["PAGEQ_KEYRING_FILE"])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the keyring file {path}: {exc.strerror}") from None
    return Keyring.parse(text) if text else None


def reveal(
    ring: Keyring | None, job_id: int, queue: str, task: str, args: Any, result: Any, errors: list[Any]
) -> tuple[Any, Any, list[Any]]:
    """A stored job's arguments, result and error records, decrypted where the keyring can (what cannot be
    decrypted is left as its envelope): for reading jobs, never for running them."""

    def open_(value: Any, purpose: str) -> Any:
        if ring is None or not is_encrypted(value):
            return value
        try:
            return ring.decrypt(value, purpose, job_id, queue, task)
        except DecryptError:
            return value

    def open_error(item: Any) -> Any:
        if not is_encrypted(item):
            return item
        inner = open_(item, f"error.{item.get('attempt')}")
        if is_encrypted(inner) or not isinstance(inner, dict):
            return {k: v for k, v in item.items() if k != MARK} | {"error": "[encrypted]"}
        return {k: v for k, v in item.items() if k != MARK} | inner

    return open_(args, "args"), open_(result, "result"), [open_error(e) for e in errors]


def seal_error(ring: Keyring, record: dict[str, Any], job_id: int, queue: str, task: str) -> dict[str, Any]:
    """An error record with its message and traceback encrypted (attempt, worker, time, reason in clear)."""
    secret = {k: record[k] for k in ("error", "traceback") if k in record}
    clear = {k: v for k, v in record.items() if k not in secret}
    return clear | ring.encrypt(secret, f"error.{record.get('attempt')}", job_id, queue, task)
