"""The documentation's examples run: docs/getting-started.md end to end (its file, then its shell steps with a
real worker), and every ```python block of the other pages written as runnable examples.

Conventions (docs pages): a ```python block runs; a block with a title (```python title="NAME.py",
```toml title="routes.toml") is written to that file instead, in the folder the page's examples run in; a
block right after a `<!-- no-run -->` line is a fragment and is skipped (kept rare: DOC_PAGES below lists the
pages whose blocks run, and each page's count of skipped blocks is pinned). docs/index.md's example runs like
getting-started.md. docs/http-api.md and docs/sql-api.md run in tests/test_http_docs.py and
tests/test_sql_api_docs.py; docs/examples.md and docs/integrations/*.md in tests using tests/docs_helpers.py.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pageq

DOCS = Path(__file__).resolve().parent.parent / "docs"
BIN = Path(sys.executable).parent

# page -> how many of its ```python blocks are marked <!-- no-run --> (fragments); every other one runs
DOC_PAGES = {
    "dispatching.md": 0,
    "jobs.md": 0,
    "monitoring.md": 0,
    "pgbouncer.md": 0,
    "queues.md": 0,
    "scaling.md": 0,
    "tasks.md": 0,
    "webhooks.md": 0,
}
# pages whose python examples run in another test (a page with python examples is here or in DOC_PAGES)
RUN_ELSEWHERE = {
    "examples.md": "tests/test_examples.py",
    "getting-started.md": "test_getting_started_end_to_end",
    "http-api.md": "tests/test_http_docs.py",
    "index.md": "test_the_home_page_example",
    "integrations/django.md": "tests/test_integrations_django.py",
    "integrations/fastapi.md": "tests/test_integrations.py",
    "integrations/sqlalchemy.md": "tests/test_integrations.py",
    "integrations/testing.md": "tests/test_integrations.py",
    "sql-api.md": "tests/test_sql_api_docs.py",
}
# the install step of getting-started.md: the test runs in an environment where pageq is installed already
INSTALL = ["python3 -m venv .venv", ". .venv/bin/activate", "pip install /path/to/pageq"]

FENCE = re.compile(r"^(?P<skip><!-- no-run -->\n)?```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)


@dataclass
class Block:
    language: str
    title: str | None
    body: str
    skipped: bool


def blocks(page: str) -> list[Block]:
    found = []
    for match in FENCE.finditer((DOCS / page).read_text()):
        info = match["info"].strip()
        language = info.split()[0] if info else ""
        title = re.search(r'title="([^"]+)"', info)
        found.append(Block(language, title[1] if title else None, match["body"], bool(match["skip"])))
    return found


def test_every_page_has_its_blocks_tagged() -> None:
    """Every fenced block of every page names a language (MkDocs highlights it; the tests know what it is)."""
    untagged = [
        page.relative_to(DOCS).as_posix()
        for page in sorted(DOCS.rglob("*.md"))
        for block in blocks(page.relative_to(DOCS).as_posix())
        if not block.language
    ]
    assert not untagged, f"fenced blocks without a language in {sorted(set(untagged))}"


def test_every_python_example_runs_somewhere() -> None:
    """A page that gains python examples gets them run: it is listed in DOC_PAGES or RUN_ELSEWHERE."""
    pages = {
        page.relative_to(DOCS).as_posix()
        for page in DOCS.rglob("*.md")
        if any(block.language == "python" for block in blocks(page.relative_to(DOCS).as_posix()))
    }
    assert not DOC_PAGES.keys() & RUN_ELSEWHERE.keys()
    assert pages == DOC_PAGES.keys() | RUN_ELSEWHERE.keys()


@pytest.mark.parametrize("page", sorted(DOC_PAGES))
def test_the_python_examples_of_a_page_run(
    page: str, app: pageq.App, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A page's ```python blocks run in order in one namespace, against the test's migrated schema (the
    pages say `pageq.App()`: the DSN and schema come from PAGEQ_DSN and PAGEQ_SCHEMA, as for a reader), in
    a folder holding the page's files (its blocks with a title, e.g. ```toml title="routes.toml")."""
    python = [block for block in blocks(page) if block.language == "python" and not block.title]
    assert python, f"{page} has no python example"
    assert sum(block.skipped for block in python) == DOC_PAGES[page], f"{page}: fragments changed"
    for block in blocks(page):
        if block.title:
            (tmp_path / block.title).write_text(block.body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAGEQ_DSN", app.database.dsn)
    monkeypatch.setenv("PAGEQ_SCHEMA", app.schema)
    # what a webhook receiver is given (docs/webhooks.md): the secret `pageq webhooks create` printed
    monkeypatch.setenv("PAGEQ_WEBHOOK_SECRET", pageq.webhooks.new_secret())
    namespace: dict[str, Any] = {"__name__": f"docs_{page.removesuffix('.md').replace('-', '_')}"}
    try:
        for number, block in enumerate(python, 1):
            if block.skipped:
                continue
            code = compile(block.body, f"docs/{page} (python block {number})", "exec")
            exec(code, namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, pageq.App) and value is not app:
                value.close()


def test_getting_started_end_to_end(app: pageq.App, env: dict[str, str], tmp_path: Path) -> None:
    """docs/getting-started.md as a reader follows it: write myapp.py, run each shell step in order (the
    worker in the background until the jobs are done, then Ctrl-C), then the page's test."""
    page = blocks("getting-started.md")
    environ = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', os.environ['PATH'])}", "PYTHONPATH": ""}
    environ.pop("PAGEQ_APP", None)
    for block in page:
        if block.language == "python" and block.title:
            (tmp_path / block.title).write_text(block.body)
    commands = [line for block in page if block.language == "sh" for line in block.body.splitlines() if line]
    assert commands[: len(INSTALL)] == INSTALL, "the install step changed: update INSTALL"
    worker: subprocess.Popen[str] | None = None
    try:
        for command in commands[len(INSTALL) :]:
            if command.startswith("pageq worker "):
                worker = subprocess.Popen(
                    shlex.split(command), cwd=tmp_path, env=environ, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )  # fmt: skip
                wait_for_succeeded(app, 3)
                continue
            done = subprocess.run(
                command, shell=True, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{command!r} failed: {done.stdout}{done.stderr}"
        assert worker is not None, "the page runs no worker"
        worker.send_signal(signal.SIGINT)  # Ctrl-C: running jobs finish, then it exits
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        assert "sending 'hi' to a@example.com" in output
        assert "sending 'order 7' to ops@example.com" in output
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
    (test,) = [block for block in page if block.language == "python" and not block.title]
    done = subprocess.run(
        [sys.executable, "-c", test.body],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_home_page_example(app: pageq.App, env: dict[str, str], tmp_path: Path) -> None:
    """docs/index.md: write myapp.py, then its one shell line (migrate, enqueue, a worker until the job is
    done, then Ctrl-C)."""
    page = blocks("index.md")
    (file,) = [block for block in page if block.language == "python"]
    assert file.title == "myapp.py"
    (tmp_path / file.title).write_text(file.body)
    (shell,) = [block for block in page if block.language == "sh"]
    *steps, start = shell.body.strip().split(" && ")
    assert start.startswith("pageq worker "), "the line ends with a worker"
    environ = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', os.environ['PATH'])}", "PYTHONPATH": ""}
    environ.pop("PAGEQ_APP", None)
    for command in steps:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{command!r} failed: {done.stdout}{done.stderr}"
    worker = subprocess.Popen(
        shlex.split(start),
        cwd=tmp_path,
        env=environ,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_succeeded(app, 1)
        worker.send_signal(signal.SIGINT)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output
    assert "sending 'hi' to a@example.com" in output


def wait_for_succeeded(app: pageq.App, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.list_jobs(state=pageq.JobState.SUCCEEDED)) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} jobs succeeded within {timeout} s: {app.list_jobs()}")


def test_the_cli_reference_covers_every_command() -> None:
    """The docs site's CLI page (generated by scripts/docs_hooks.py) has a section for every command."""
    import importlib.util

    import mkdocs  # noqa: F401  (the `docs` extra, part of `test`)
    import typer

    from pageq.cli.main import cli

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS.parent / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = hooks.cli_reference()

    def paths(command: Any, prefix: str) -> list[str]:
        if not hasattr(command, "list_commands"):
            return [prefix]
        context = typer.Context(command, info_name=prefix)
        found = [prefix] if prefix != "pageq" else []
        for name in command.list_commands(context):
            found += paths(command.get_command(context, name), f"{prefix} {name}")
        return found

    commands = paths(typer.main.get_command(cli), "pageq")
    assert len(commands) > 40
    missing = [path for path in commands if f"# `{path}`" not in page]
    assert not missing, f"the CLI reference misses {missing}"
