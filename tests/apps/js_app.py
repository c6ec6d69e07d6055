"""The app clients/js's tests serve (``pageq serve apps.js_app:app``): the app of docs/http-api.md (whose
JavaScript examples they run) with more tasks: some the JavaScript worker works (queue ``js``; their Python
handlers never run) and some a Python worker works (queue ``py``)."""

from __future__ import annotations

from apps.http_app import app

__all__ = ["app"]


@app.task(name="js.add", queue="js", max_attempts=3)
def add(a: int, b: int) -> int:
    raise NotImplementedError("worked by the JavaScript worker")


@app.task(name="js.sleep", queue="js", max_attempts=3)
def sleep(seconds: float = 0) -> None:
    raise NotImplementedError("worked by the JavaScript worker")


@app.task(name="js.fail", queue="js", max_attempts=3)
def fail(how: str) -> None:
    raise NotImplementedError("worked by the JavaScript worker")


@app.task(name="py.greet", queue="py")
def greet(name: str, punctuation: str = "!") -> dict[str, str]:
    return {"greeting": f"hello {name}{punctuation}", "by": "python"}
