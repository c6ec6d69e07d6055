"""Run the docs: fenced code blocks of docs/*.md, and the steps the integration pages tell a new user.

Conventions (those of tests/test_docs_snippets.py): a ```python title="PATH" block is the file PATH (appended
to it when its first line is ``# add at the end of PATH``); a python block whose first line is
``# python ...`` is that command's input; another python block runs with ``python -``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
TITLE = re.compile(r'title="([^"]+)"')
APPEND = "# add at the end of "


def blocks(page: str, language: str = "python") -> list[str]:
    """The bodies of the fenced blocks of ``language`` in docs/``page``, in order."""
    text = (DOCS / page).read_text()
    return [body for lang, _info, body in FENCE.findall(text) if lang == language]


def commands(page: str) -> list[str]:
    """The lines of the page's ```bash blocks."""
    return [line for body in blocks(page, "bash") for line in body.splitlines() if line.strip()]


def steps(page: str) -> list[tuple[str, str, str]]:
    """The page's blocks in order as (kind, title, text): ``file`` (a python block with a title),
    ``python`` (another python block), ``command`` (one line of a bash block)."""
    found: list[tuple[str, str, str]] = []
    for lang, info, body in FENCE.findall((DOCS / page).read_text()):
        title = TITLE.search(info)
        if lang == "python":
            found.append(("file", title[1], body) if title else ("python", "", body))
        elif lang == "bash":
            found.extend(("command", "", line) for line in body.splitlines() if line.strip())
    return found


def write_file(folder: Path, path: str, body: str) -> None:
    target = folder / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if body.startswith(APPEND):
        target.write_text(target.read_text() + "\n" + body)
    else:
        target.write_text(body)


def run(args: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    done = subprocess.run(args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def until(check: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Wait until ``check()`` (a worker ``process`` runs meanwhile), then stop the process with SIGTERM."""
    deadline = time.monotonic() + timeout
    try:
        while not check():
            assert process.poll() is None, f"the worker exited: {process.communicate()}"
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT if os.name == "nt" else signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _argv(line: str) -> list[str]:
    words = line.split()
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return [str(BIN / words[0]), *words[1:]]


def follow(
    page: str, folder: Path, env: dict[str, str], done: Callable[[], bool],
    worker: bool = True, before: Callable[[str], None] | None = None,
) -> list[str]:  # fmt: skip
    """Do what docs/``page`` says, in order, in ``folder``: write its files, run its commands (``pip
    install`` excepted: the test environment has the extras) and other python blocks; the command that
    starts a worker runs until ``done()``, then gets SIGTERM (``worker``: the page must start one).
    ``before(command)`` runs before each command (to adjust the files for the test). Returns the output of
    each python block and command."""
    outputs = []
    started = False
    for kind, title, text in steps(page):
        if kind == "command" and before is not None:
            before(text)
        if kind == "file":
            write_file(folder, title, text)
        elif kind == "python":
            first = text.splitlines()[0]
            argv = _argv(first[2:]) if first.startswith("# python ") else [sys.executable, "-"]
            outputs.append(run(argv, folder, env, stdin=text))
        elif text.startswith("pip install"):
            continue
        elif "worker" in text:
            process = subprocess.Popen(
                _argv(text), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            until(done, process)
            started = True
        else:
            outputs.append(run(_argv(text), folder, env))
    assert started or not worker, f"{page} starts no worker"
    return outputs
