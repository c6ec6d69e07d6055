"""Load named query blocks (`-- name: x`) from `pageq/sql/queries/*.sql`, with the schema filled in."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from pageq.errors import ConfigError

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
_BLOCK_RE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def check_schema(schema: str) -> str:
    if not SCHEMA_RE.match(schema):
        raise ConfigError(f"invalid schema name {schema!r}: use lowercase letters, digits and '_'")
    return schema


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which jobs of this schema are announced."""
    return f"pageq_jobs_{schema}"


def render(text: str, schema: str) -> str:
    return text.replace("{schema}", schema).replace("{channel}", channel_for(schema))


@cache
def _raw_blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    folder = resources.files("pageq.sql") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _BLOCK_RE.split(entry.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in blocks:
                raise RuntimeError(f"query {name!r} is defined twice")
            blocks[name] = body.strip()
    return blocks


@cache
def queries_for(schema: str) -> dict[str, str]:
    """Every named query, rendered for ``schema``."""
    return {name: render(body, check_schema(schema)) for name, body in _raw_blocks().items()}


def query_names() -> list[str]:
    return sorted(_raw_blocks())


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, raw SQL) of every migration, in order."""
    found = []
    folder = resources.files("pageq.sql") / "migrations"
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)
