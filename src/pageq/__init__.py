"""pageq: a durable, fast, auditable job queue for Python on PostgreSQL.

Example::

    import pageq

    app = pageq.App()

    @app.task(queue="emails")
    def send_email(to: str) -> None: ...

    send_email.enqueue(to="a@example.com")
"""

from pageq.app import App, Timings
from pageq.clock import Clock, FrozenClock, SystemClock
from pageq.config import embedded_start, embedded_status, embedded_stop
from pageq.context import Context, ParentResult
from pageq.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigError,
    DatabaseError,
    DuplicateJobError,
    InvalidOptionError,
    InvalidStateError,
    JobNotFoundError,
    JobTimeoutError,
    MigrationError,
    NonRetryableError,
    PageqError,
    SerializationError,
    StaleLeaseError,
    UnknownTaskError,
)
from pageq.periodic import Periodic
from pageq.retry import Backoff
from pageq.routing import Route, RouteDecision, Router, load_routes
from pageq.security.acl import Decision
from pageq.security.crypto import DecryptError, Keyring
from pageq.stats import (
    Counts,
    Latency,
    MinuteStats,
    Percentiles,
    QueueSummary,
    Rates,
    SystemStats,
    Totals,
    WorkerStats,
)
from pageq.task import Task
from pageq.types import Attempt, Job, JobPage, JobSpec, JobState, QueueControl, QueueStats, Unique
from pageq.webhooks import Event, WebhookSettings
from pageq.worker import Worker, WorkerOptions, load_app

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "App",
    "Attempt",
    "AuthenticationError",
    "Backoff",
    "Clock",
    "ConfigError",
    "Context",
    "Counts",
    "DatabaseError",
    "Decision",
    "DecryptError",
    "DuplicateJobError",
    "Event",
    "FrozenClock",
    "InvalidOptionError",
    "InvalidStateError",
    "Job",
    "JobNotFoundError",
    "JobPage",
    "JobSpec",
    "JobState",
    "JobTimeoutError",
    "Keyring",
    "Latency",
    "MigrationError",
    "MinuteStats",
    "NonRetryableError",
    "PageqError",
    "ParentResult",
    "Percentiles",
    "Periodic",
    "QueueControl",
    "QueueStats",
    "QueueSummary",
    "Rates",
    "Route",
    "RouteDecision",
    "Router",
    "SerializationError",
    "StaleLeaseError",
    "SystemClock",
    "SystemStats",
    "Task",
    "Timings",
    "Totals",
    "Unique",
    "UnknownTaskError",
    "WebhookSettings",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
    "embedded_start",
    "embedded_status",
    "embedded_stop",
    "load_app",
    "load_routes",
]
