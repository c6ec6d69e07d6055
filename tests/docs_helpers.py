"""Run the docs: fenced code blocks of docs/*.md, and the steps the integration pages tell a new user."""

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
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
FILE = re.compile(r"^# (\S+\.py)(: add at the end)?\n")


def blocks(page: str, language: str = "python") -> list[str]:
    """The fenced blocks of ``language`` in docs/``page``, in order."""
    text = (DOCS / page).read_text()
    return [body for lang, body in FENCE.findall(text) if lang == language]


def commands(page: str) -> list[str]:
    """The lines of the page's ```bash blocks."""
    return [line for body in blocks(page, "bash") for line in body.splitlines() if line.strip()]


def write_files(page: str, folder: Path) -> list[str]:
    """Write each python block that starts with ``# path.py`` into ``folder`` (appending when it says ``: add
    at the end``); returns the other python blocks."""
    rest = []
    for body in blocks(page):
        match = FILE.match(body)
        if match is None:
            rest.append(body)
            continue
        write_files_from(body, folder)
    return rest


def run(args: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    done = subprocess.run(args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


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


def steps(page: str) -> list[tuple[str, str]]:
    """The page's blocks in order as (kind, text): ``file`` (a python block naming its file), ``python``
    (another python block), ``command`` (one line of a bash block)."""
    found: list[tuple[str, str]] = []
    for lang, body in FENCE.findall((DOCS / page).read_text()):
        if lang == "python":
            found.append(("file" if FILE.match(body) else "python", body))
        elif lang == "bash":
            found.extend(("command", line) for line in body.splitlines() if line.strip())
    return found


def _argv(line: str) -> list[str]:
    words = line.split()
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return [str(BIN / words[0]), *words[1:]]


def follow(
    page: str, folder: Path, env: dict[str, str], done: Callable[[], bool],
    before_commands: Callable[[], None] | None = None, worker: bool = True,
) -> list[str]:  # fmt: skip
    """Do what docs/``page`` says, in order, in ``folder``: write its files, run its commands (``pip
    install`` excepted: the test environment has the extras) and python blocks (a block whose first line is
    ``# python ...`` is that command's input, others run with ``python -``); the command that starts a
    worker runs until ``done()``, then gets SIGTERM. ``before_commands`` runs before the first command
    that follows a file (to adjust the files for the test). Returns the output of each python block and
    command."""
    outputs = []
    started = wrote = False
    for kind, text in steps(page):
        if kind != "file" and wrote and before_commands is not None:
            before_commands()
            before_commands = None
        if kind == "file":
            write_files_from(text, folder)
            wrote = True
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


def write_files_from(body: str, folder: Path) -> None:
    match = FILE.match(body)
    assert match is not None
    target = folder / match.group(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    if match.group(2):
        target.write_text(target.read_text() + "\n" + body)
    else:
        target.write_text(body)
