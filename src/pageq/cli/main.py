"""`pageq` commands: demo, migrate, worker, serve, enqueue, status, top, jobs, dlq, db, webhooks."""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Any

import typer

import pageq
from pageq.cli.common import AppRef, Json, Limit, QueueFilter, Schema, TaskFilter, open_app
from pageq.cli.dispatch import queues_cli, routes
from pageq.cli.output import emit_json, fail, jobs_table, out, stats_table
from pageq.cli.security import acl_cli, audit_cli, keys_cli, principals_cli, tokens_cli
from pageq.cli.top import top
from pageq.cli.webhooks import webhooks_cli

cli = typer.Typer(
    help="pageq: a durable job queue on PostgreSQL.", no_args_is_help=True, add_completion=False
)
jobs_cli = typer.Typer(help="Inspect and act on jobs.", no_args_is_help=True)
dlq_cli = typer.Typer(help="The dead-letter queue: jobs that ran out of attempts.", no_args_is_help=True)
db_cli = typer.Typer(
    help="The embedded PostgreSQL under $PAGEQ_HOME (default ./.pageq).", no_args_is_help=True
)
cli.add_typer(jobs_cli, name="jobs")
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(db_cli, name="db")
cli.add_typer(queues_cli, name="queues")
cli.command()(routes)
cli.command()(top)
cli.add_typer(principals_cli, name="principals")
cli.add_typer(tokens_cli, name="tokens")
cli.add_typer(acl_cli, name="acl")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(webhooks_cli, name="webhooks")


@cli.command()
def migrate(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if migrations are pending.")] = False,
    schema: Schema = None,
) -> None:
    """Create or upgrade pageq's tables (safe to run concurrently)."""
    app = open_app(None, schema)
    if check:
        status = app.migration_status()
        if status.pending:
            fail(f"pending migrations: {', '.join(status.pending)}")
        if not status.sql_api_current:
            fail("the SQL API's query functions are out of date: run `pageq migrate`")
        out.print("schema is up to date")
        return
    applied = app.migrate()
    out.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@cli.command()
def worker(
    app_ref: Annotated[str, typer.Argument(metavar="APP", help="The app as module:attribute.")],
    queues: Annotated[str, typer.Option("--queues", "-q", help="Comma-separated queues.")] = "default",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 10,
    processes: Annotated[int, typer.Option("--processes", "-p", min=1)] = 1,
    lease: Annotated[float, typer.Option(help="Seconds a claim holds a job without a heartbeat.")] = 30.0,
    heartbeat: Annotated[float | None, typer.Option(help="Seconds between heartbeats (lease/3).")] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls when idle.")] = 1.0,
    grace: Annotated[float, typer.Option(help="Seconds running jobs get to finish on SIGTERM.")] = 30.0,
    maintenance_interval: Annotated[float, typer.Option(help="Seconds between leader duties.")] = 1.0,
    crash_limit: Annotated[
        int, typer.Option(min=1, help="Bury a job (worker_crash) after its worker vanished this often.")
    ] = 3,
    webhooks: Annotated[
        bool, typer.Option(help="Also deliver webhooks (queue pageq.webhooks) when acting as the owner.")
    ] = True,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve Prometheus metrics at /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the metrics endpoint listens on.")] = "127.0.0.1",
    schema: Schema = None,
) -> None:
    """Run jobs until SIGTERM/SIGINT (a second signal stops at once)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO line names each webhook URL (tokens too)
    if schema:
        os.environ["PAGEQ_SCHEMA"] = schema
    app = open_app(app_ref, schema)
    if metrics_port is not None:
        _serve_metrics(app, metrics_host, metrics_port)
    options: dict[str, Any] = {
        "lease": lease, "heartbeat": heartbeat, "poll_interval": poll_interval, "grace": grace,
        "maintenance_interval": maintenance_interval, "crash_limit": crash_limit, "webhooks": webhooks,
    }  # fmt: skip
    names = [q.strip() for q in queues.split(",") if q.strip()]
    raise SystemExit(app.run_worker(names, concurrency, processes=processes, app_ref=app_ref, **options))


def _serve_metrics(app: pageq.App, host: str, port: int) -> None:
    from pageq import metrics

    try:
        metrics.serve(app, port, host)
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
    logging.getLogger("pageq.worker").info("metrics at http://%s:%d/metrics", host, port)


@cli.command()
def serve(
    app_ref: Annotated[str, typer.Argument(metavar="APP", help="The app as module:attribute.")],
    host: Annotated[str, typer.Option(help="Address to bind (non-loopback needs TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    tls_cert: Annotated[str | None, typer.Option(help="PEM certificate (chain) to serve TLS.")] = None,
    tls_key: Annotated[str | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    insecure: Annotated[bool, typer.Option(help="Allow a non-loopback bind without TLS.")] = False,
    max_body: Annotated[int, typer.Option(min=1, help="Largest request body in bytes (413 beyond).")] = 1
    << 20,
    max_batch: Annotated[int, typer.Option(min=1, help="Most jobs in one batch enqueue.")] = 1000,
    rate: Annotated[
        float | None, typer.Option(help="Requests per second per principal (429 beyond).")
    ] = None,
    burst: Annotated[int, typer.Option(min=1, help="Requests a principal may make at once.")] = 50,
    schema: Schema = None,
) -> None:
    """Serve the HTTP API of APP (OpenAPI at /openapi.json, docs at /docs) until interrupted."""
    from pageq.http import Settings
    from pageq.http.serve import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    app = open_app(app_ref, schema)
    settings = Settings.from_env(max_body=max_body, max_batch=max_batch, rate=rate, burst=burst)
    run_server(app, host, port, settings=settings, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)


@cli.command()
def enqueue(
    task: Annotated[str, typer.Argument(help="Task name.")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option()] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds to wait before it may run.")] = None,
    max_attempts: Annotated[int | None, typer.Option()] = None,
    app_ref: AppRef = None,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Enqueue one job of TASK (the app, given by --app or PAGEQ_APP, must define it)."""
    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        fail("--args must be a JSON object")
    if app_ref is None:
        fail("enqueue needs the app that defines the task: --app module:attribute or PAGEQ_APP")
    app = open_app(app_ref, schema)
    options = {"queue": queue, "priority": priority, "delay": delay, "max_attempts": max_attempts}
    job_id = app.enqueue(task, parsed, **{k: v for k, v in options.items() if v is not None})
    if as_json:
        emit_json({"id": job_id})
    else:
        out.print(f"enqueued job {job_id}")


@cli.command()
def status(schema: Schema = None, as_json: Json = False) -> None:
    """Per queue: jobs by state, oldest waiting job, throughput over the last minute."""
    app = open_app(None, schema)
    stats = app.queue_stats()
    if as_json:
        emit_json([{**_plain_stats(s)} for s in stats])
        return
    out.print(stats_table(stats))
    workers = app.workers()
    running = sum(w["running"] for w in workers)
    capacity = sum(w["concurrency"] for w in workers)
    out.print(f"{len(workers)} worker(s) registered, running {running} of {capacity} slots")


def _plain_stats(item: pageq.QueueStats) -> dict[str, Any]:
    return {
        "queue": item.queue, "counts": {k.value: v for k, v in item.counts.items()},
        "oldest_queued_age": item.oldest_queued_age, "throughput": item.throughput,
    }  # fmt: skip


def _state(value: str | None) -> pageq.JobState | None:
    if value is None:
        return None
    try:
        return pageq.JobState(value)
    except ValueError:
        fail(f"unknown state {value!r}: use one of {', '.join(s.value for s in pageq.JobState)}")


@jobs_cli.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option()] = None,
    queue: QueueFilter = None,
    task: TaskFilter = None,
    limit: Limit = 50,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Newest jobs first."""
    app = open_app(None, schema)
    found = app.list_jobs(_state(state), queue=queue, task=task, limit=limit)
    emit_json(found) if as_json else out.print(jobs_table(found))


@jobs_cli.command("show")
def jobs_show(job_id: int, schema: Schema = None, as_json: Json = False) -> None:
    """One job with its arguments, result and every failed attempt."""
    job = open_app(None, schema).get_job(job_id)
    if as_json:
        emit_json(job)
        return
    out.print(jobs_table([job], title=f"job {job.id}"))
    out.print(f"args: {json.dumps(job.args)}", highlight=False)
    out.print(f"result: {json.dumps(job.result)}", highlight=False)
    for attempt in job.errors:
        out.print(
            f"[bold]attempt {attempt.attempt}[/bold] at {attempt.at} on {attempt.worker}: {attempt.error}"
        )
        if attempt.traceback:
            out.print(attempt.traceback, highlight=False, markup=False)


@jobs_cli.command("retry")
def jobs_retry(job_id: int, schema: Schema = None) -> None:
    """Run a job again now (dead or cancelled ones are requeued)."""
    job = open_app(None, schema).retry(job_id)
    out.print(f"job {job.id} is {job.state.value}")


@jobs_cli.command("cancel")
def jobs_cancel(job_id: int, schema: Schema = None) -> None:
    """Cancel a job that has not finished."""
    job = open_app(None, schema).cancel(job_id)
    out.print(f"job {job.id} is {job.state.value}")


@jobs_cli.command("cancel-all")
def jobs_cancel_all(
    state: Annotated[str | None, typer.Option(help="Only jobs in this live state.")] = None,
    queue: QueueFilter = None,
    task: TaskFilter = None,
    limit: Limit = 10000,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    schema: Schema = None,
) -> None:
    """Cancel every live job that matches the filters (running ones are told to stop)."""
    unfiltered = state is None and queue is None and task is None
    if unfiltered and not yes and not typer.confirm("No filter given: cancel every live job?", default=False):
        fail("not confirmed")
    found = _state(state)
    cancelled = open_app(None, schema).cancel_jobs(state=found, queue=queue, task=task, limit=limit)
    out.print(f"cancelled {len(cancelled)} job(s)")


@dlq_cli.command("list")
def dlq_list(
    queue: QueueFilter = None,
    task: TaskFilter = None,
    limit: Limit = 50,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Dead jobs, newest first."""
    found = open_app(None, schema).dead_jobs(queue=queue, task=task, limit=limit)
    emit_json(found) if as_json else out.print(jobs_table(found, title="dead jobs"))


@dlq_cli.command("requeue")
def dlq_requeue(
    ids: Annotated[list[int] | None, typer.Argument(help="Job ids; none means every dead job.")] = None,
    queue: QueueFilter = None,
    task: TaskFilter = None,
    schema: Schema = None,
) -> None:
    """Put dead jobs back in their queues with fresh attempts."""
    requeued = open_app(None, schema).requeue_dead(ids or None, queue=queue, task=task)
    out.print(f"requeued {len(requeued)} job(s)")


@dlq_cli.command("purge")
def dlq_purge(
    queue: QueueFilter = None,
    task: TaskFilter = None,
    older_than: Annotated[float | None, typer.Option(help="Only jobs dead for this many seconds.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    schema: Schema = None,
) -> None:
    """Delete dead jobs for good."""
    if not yes and not typer.confirm("Delete dead jobs for good?", default=False):
        fail("not confirmed")
    purged = open_app(None, schema).purge_dead(queue=queue, task=task, older_than=older_than)
    out.print(f"purged {purged} job(s)")


@db_cli.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (it keeps running after this command)."""
    pageq.embedded_start()
    info = pageq.embedded_status()
    out.print(f"embedded PostgreSQL running (pid {info.pid}) in {info.pgdata}")


@db_cli.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    out.print("stopped" if pageq.embedded_stop() else "not running")


@db_cli.command("status")
def db_status(as_json: Json = False) -> None:
    """Whether the embedded PostgreSQL runs."""
    info = pageq.embedded_status()
    if as_json:
        emit_json({"running": info.running, "pid": info.pid, "pgdata": str(info.pgdata), "url": info.url})
        return
    out.print(f"running (pid {info.pid}) in {info.pgdata}" if info.running else f"stopped ({info.pgdata})")
    if not info.running:
        raise SystemExit(3)


@db_cli.command("url")
def db_url() -> None:
    """Print the embedded PostgreSQL's DSN, starting it if needed."""
    print(pageq.embedded_start())


@cli.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, max=100_000, help="How many orders.")] = 3000,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    schema: Annotated[str, typer.Option(help="Schema the demo uses (reset first).")] = "pageq_demo",
) -> None:
    """Run an e-commerce order pipeline through a real worker and print a summary."""
    from pageq.cli.demo import run_demo

    run_demo(orders=orders, concurrency=concurrency, schema=schema)


def main() -> None:
    """Entry point: run the CLI, turning pageq's errors into one line and exit code 1."""
    try:
        cli(standalone_mode=True)
    except pageq.PageqError as exc:
        fail(str(exc))
    except (ValueError, ModuleNotFoundError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
