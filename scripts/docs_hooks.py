"""MkDocs hooks (mkdocs.yml `hooks:`): pages generated at build time, never copied by hand.

- `reference/cli.md`: every command of the `pageq` CLI, rendered from the Typer app itself (usage, help,
  arguments and options with their defaults and environment variables).
- `benchmarks/results/*`: the benchmark reports and charts of `bench/results/` (MkDocs serves only files under
  `docs/`), served as they are in the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
BENCH_RESULTS = ROOT / "bench" / "results"


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    for path in sorted(BENCH_RESULTS.iterdir()):
        if path.suffix in {".md", ".png"}:
            files.append(File.generated(config, f"benchmarks/results/{path.name}", abs_src_path=str(path)))
    return files


def cli_reference() -> str:
    """Markdown for every command of the CLI, depth first, in the order `pageq --help` lists them."""
    from pageq.cli.main import cli

    root = typer.main.get_command(cli)
    lines = [
        "# CLI reference",
        "",
        "Generated at build time from the `pageq` command itself (`scripts/docs_hooks.py`); `pageq COMMAND "
        "--help` prints the same. Every command that a script would parse takes `--json`; errors are one "
        "line on stderr with a non-zero exit. The database comes from `PAGEQ_DSN` (else `DATABASE_URL`, else "
        "the embedded server in `./.pageq`), the schema from `--schema` or `PAGEQ_SCHEMA`.",
        "",
    ]
    context = typer.Context(root, info_name="pageq")
    _command(root, context, lines, level=2)
    return "\n".join(lines) + "\n"


def _command(command: Any, context: typer.Context, lines: list[str], level: int) -> None:
    """A command's section, then its subcommands' (Typer's vendored click: duck-typed)."""
    path = context.command_path
    if level > 2:
        lines += [f"{'#' * level} `{path}`", ""]
    help_text = (command.help or "").strip()
    if help_text:
        lines += [help_text.replace("\b\n", ""), ""]
    pieces = " ".join(command.collect_usage_pieces(context))
    lines += ["```text", f"{path} {pieces}".rstrip(), "```", ""]
    rows = [row for param in command.get_params(context) if (row := _param_row(param, context)) is not None]
    if rows:
        lines += ["| argument or option | meaning |", "|---|---|", *rows, ""]
    if hasattr(command, "list_commands"):
        names = command.list_commands(context)
        if level == 2:
            lines += ["| command | what it does |", "|---|---|"]
            for name in names:
                sub = command.get_command(context, name)
                if sub is not None and not sub.hidden:
                    lines.append(f"| [`{name}`](#pageq-{name}) | {_cell(sub.get_short_help_str(200))} |")
            lines.append("")
        for name in names:
            sub = command.get_command(context, name)
            if sub is None or sub.hidden:
                continue
            _command(sub, typer.Context(sub, info_name=name, parent=context), lines, level + 1)


def _param_row(param: Any, context: typer.Context) -> str | None:
    if getattr(param, "hidden", False) or param.name == "help":
        return None
    if param.param_type_name == "option":
        names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        if param.is_flag and param.secondary_opts:
            names = (
                ", ".join(f"`{opt}`" for opt in param.opts)
                + " / "
                + ", ".join(f"`{opt}`" for opt in param.secondary_opts)
            )
    else:
        names = f"`{(param.name or '').upper()}`"
    meaning = [_cell(getattr(param, "help", None) or "")]
    kind = "flag" if getattr(param, "is_flag", False) else param.display_type(context).strip("<>")
    meaning.append(f"({kind}{', required' if param.required else ''})")
    default = param.get_default(context, call=False)
    if default not in (None, False, "", ()) and not callable(default) and not param.required:
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
        meaning.append(f"default `{shown}`")
    envvar = getattr(param, "envvar", None)
    if envvar:
        meaning.append(f"env `{envvar if isinstance(envvar, str) else ', '.join(envvar)}`")
    return f"| {names} | {' '.join(part for part in meaning if part)} |"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())
