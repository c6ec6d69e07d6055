"""HTML pages: Jinja2 templates (autoescaped) shipped in the package, and the filters they format with."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from pageq.http.dashboard import live
from pageq.http.dashboard.headers import NONCE_KEY
from pageq.http.dashboard.session import FLASH_COOKIE, Viewer, secure
from pageq.stats import SHOWN_STATES

env = Environment(
    loader=PackageLoader("pageq.http.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def age(seconds: float | None) -> str:
    """``3.2 s``, ``4 min``, ``2 h 5 min``, ``3 d 4 h``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def duration(seconds: float | None) -> str:
    """Milliseconds below a second, seconds below a minute, then as `age`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return age(seconds)


def size(count: float | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return "-"


def rate(per_second: float) -> str:
    if per_second == 0:
        return "0"
    return f"{per_second:.2f}" if per_second < 10 else f"{per_second:.0f}"


def when(moment: datetime | str | None) -> str:
    """A UTC time, to the second (the page's script shows it in the viewer's zone as well)."""
    if moment is None:
        return "-"
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment)
        except ValueError:
            return moment
        return when(parsed)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def urlencode_multi(fields: dict[str, Any]) -> str:
    """A query string of the non-empty fields (a list gives the name once per item)."""
    pairs = [
        (name, item)
        for name, value in fields.items()
        for item in (value if isinstance(value, list) else [value])
        if item not in (None, "")
    ]
    return urlencode(pairs)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


env.filters.update(
    age=age,
    duration=duration,
    size=size,
    rate=rate,
    when=when,
    pretty=pretty,
    urlencode_multi=urlencode_multi,
)
env.globals.update(key=live.key, SHOWN=[s.value for s in SHOWN_STATES])


def page(
    request: Request, template: str, viewer: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """The template rendered for ``viewer``, with the request's CSP nonce and the pending flash message."""
    flash = unquote(request.cookies.get(FLASH_COOKIE, ""))
    html = env.get_template(template).render(
        nonce=getattr(request.state, NONCE_KEY, ""),
        base=request.scope.get("root_path", ""),
        path=request.url.path,
        viewer=viewer,
        flash=flash.lstrip("!"),
        flash_error=flash.startswith("!"),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if flash:
        response.delete_cookie(
            FLASH_COOKIE, httponly=True, secure=secure(request), samesite="strict", path="/"
        )
    return response
