"""Request bodies: read within the size limit, then parsed as strict JSON (UTF-8, bounded nesting, no NUL
and no lone surrogate in any string, no NaN or Infinity). Pure apart from reading the request."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from pageq.http.problems import Problem


async def read(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 problem as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "malformed", "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Problem:
    return Problem(413, "too_large", f"the request body exceeds the limit of {limit} bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(content_type: str | None, body: bytes, max_depth: int) -> Any:
    """The JSON value of ``body``, or a 400 (malformed) / 415 (not JSON) problem."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise Problem(415, "unsupported_media_type", "the request body must be application/json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "malformed", "the request body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise Problem(400, "malformed", f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of thousands of digits
        raise Problem(400, "malformed", f"the request body is not valid JSON: {_first_line(exc)}") from None
    _check(value, max_depth)
    return value


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _check(value: Any, max_depth: int) -> None:
    """Nesting within ``max_depth``; strings PostgreSQL can store (no NUL) and UTF-8 can encode."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise Problem(400, "malformed", f"JSON nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise Problem(400, "malformed", "a string contains a NUL character, which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(400, "malformed", "a string contains a lone surrogate (not valid Unicode)") from None
