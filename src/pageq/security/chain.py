"""Verifying the audit trail's sealed hash chain. Pure: the caller fetches seals and rows.

Each seal covers the rows written by a range of ended transactions: it keeps their ids, their row hashes
(32 bytes each, in id order) and ``digest = sha256(previous digest | "from:to" | hashes)``. Verification
recomputes the chain, then compares each seal's rows with the table's current rows: a row missing from the
table was removed, an extra row was inserted, a different hash means it was altered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

HASH = 32


class SealLike(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def from_xid(self) -> int: ...
    @property
    def to_xid(self) -> int: ...
    @property
    def ids(self) -> list[int]: ...
    @property
    def hashes(self) -> bytes: ...
    @property
    def prev_digest(self) -> bytes: ...
    @property
    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class Finding:
    """The first problem found: what (``altered``, ``removed``, ``inserted``, ``seal``), where, and why."""

    kind: str
    seal: int
    row_id: int | None
    message: str


def seal_digest(prev: bytes, from_xid: int, to_xid: int, hashes: bytes) -> bytes:
    return hashlib.sha256(prev + f"{from_xid}:{to_xid}".encode() + hashes).digest()


def check_seal(seal: SealLike, prev_digest: bytes) -> Finding | None:
    """Whether a seal is intact and continues the chain."""
    if seal.prev_digest != prev_digest:
        return Finding(
            "seal", seal.seq, None, f"seal {seal.seq} does not continue the chain (previous digest)"
        )
    if len(seal.hashes) != HASH * len(seal.ids):
        return Finding("seal", seal.seq, None, f"seal {seal.seq} is malformed (ids and hashes disagree)")
    if seal_digest(seal.prev_digest, seal.from_xid, seal.to_xid, seal.hashes) != seal.digest:
        return Finding("seal", seal.seq, None, f"seal {seal.seq} was altered (digest mismatch)")
    return None


def check_rows(seal: SealLike, rows: Sequence[tuple[int, bytes]]) -> Finding | None:
    """Compare the rows a seal covers with the table's current rows (both in id order)."""
    sealed = {row_id: seal.hashes[i * HASH : (i + 1) * HASH] for i, row_id in enumerate(seal.ids)}
    current = dict(rows)
    for row_id in sorted(set(sealed) | set(current)):
        if row_id not in current:
            return Finding(
                "removed", seal.seq, row_id, f"audit row {row_id} was removed (sealed in {seal.seq})"
            )
        if row_id not in sealed:
            return Finding(
                "inserted", seal.seq, row_id, f"audit row {row_id} was inserted after seal {seal.seq}"
            )
        if sealed[row_id] != current[row_id]:
            return Finding(
                "altered", seal.seq, row_id, f"audit row {row_id} was altered (sealed in {seal.seq})"
            )
    return None


def verify(seals: Iterable[tuple[SealLike, Sequence[tuple[int, bytes]]]]) -> tuple[int, int, Finding | None]:
    """Walk the chain in order: (seals checked, rows checked, the first finding or None)."""
    prev = b""
    checked = rows_checked = 0
    for seal, rows in seals:
        finding = check_seal(seal, prev) or check_rows(seal, rows)
        if finding is not None:
            return checked, rows_checked, finding
        prev = seal.digest
        checked += 1
        rows_checked += len(rows)
    return checked, rows_checked, None
