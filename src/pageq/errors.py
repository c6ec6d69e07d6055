"""Errors raised by pageq. Every error a user can cause is a `PageqError` with a one-line message."""

from __future__ import annotations


class PageqError(Exception):
    """Base class of every error pageq raises on purpose."""


class ConfigError(PageqError):
    """The configuration (DSN, schema name, options) is invalid."""


class UnknownTaskError(PageqError):
    """A task name that no `@app.task` registered."""


class InvalidOptionError(PageqError, ValueError):
    """An enqueue, task or policy option is out of range or of the wrong type."""


class SerializationError(PageqError):
    """Job arguments or a result that cannot be stored as JSON."""


class JobNotFoundError(PageqError):
    """No job has the given id."""


class InvalidStateError(PageqError):
    """The job is not in a state that allows the requested action."""


class MigrationError(PageqError):
    """The database schema is missing, out of date or newer than this pageq."""


class DatabaseError(PageqError):
    """The database could not be reached or refused a statement."""


class StaleLeaseError(PageqError):
    """The worker no longer holds the job's lease (it was rescued or released); nothing was written."""


class DuplicateJobError(PageqError):
    """A job's unique key is held by another job (``on_conflict="raise"``); ``job_id`` is the holder."""

    def __init__(self, message: str, job_id: int) -> None:
        super().__init__(message)
        self.job_id = job_id


class NonRetryableError(Exception):
    """Raise from a handler to send the job straight to `dead`, whatever attempts remain.

    Example::

        @app.task()
        def charge(order_id: int) -> None:
            if not valid(order_id):
                raise pageq.NonRetryableError(f"order {order_id} is invalid")
    """


class JobTimeoutError(Exception):
    """A handler ran longer than its task's `timeout`."""


class AuthenticationError(PageqError):
    """A token that is unknown, revoked, or whose principal is disabled."""


class AccessDeniedError(PageqError):
    """The acting principal may not do this (deny by default, or an explicit deny); the attempt is audited."""
