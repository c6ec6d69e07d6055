"""Encryption in transit: the TLS policy for connections to PostgreSQL.

A connection to a host other than this machine (loopback address or Unix socket) must be encrypted and
must authenticate the server: without an explicit ``sslmode`` pageq uses ``verify-full`` (certificate chain
and host name), with the system's CA store unless ``sslrootcert``/``PGSSLROOTCERT`` or
``~/.postgresql/root.crt`` names one. An explicit ``sslmode`` is honoured, except that a plain connection
(``disable``, ``allow``, ``prefer``) to a remote host is refused unless ``PAGEQ_ALLOW_INSECURE_DB=1``, which
logs a warning.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pageq.errors import ConfigError

PLAIN = ("disable", "allow", "prefer")


def is_local(host: str) -> bool:
    """A Unix socket directory, ``localhost`` or a loopback address."""
    if not host or host.startswith(("/", "@")) or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secure_dsn(dsn: str, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The DSN to use under the TLS policy, and a warning to log (or `ConfigError` when refused)."""
    env = os.environ if environ is None else environ
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise ConfigError("the database DSN is not valid") from None  # libpq's message may echo a password
    hosts = str(params.get("hostaddr") or params.get("host") or env.get("PGHOST", "")).split(",")
    if all(is_local(h.strip()) for h in hosts):
        return dsn, None
    where = ",".join(h.strip() for h in hosts)
    mode = str(params.get("sslmode") or env.get("PGSSLMODE") or "")
    if not mode:
        extra = {"sslmode": "verify-full"}
        named = params.get("sslrootcert") or env.get("PGSSLROOTCERT")
        if not named and not (Path.home() / ".postgresql" / "root.crt").exists():
            extra["sslrootcert"] = "system"
        return make_conninfo(dsn, **extra), None
    if mode in PLAIN:
        if env.get("PAGEQ_ALLOW_INSECURE_DB") != "1":
            raise ConfigError(
                f"refusing a connection to {where} with sslmode={mode}: it may travel unencrypted; use "
                "sslmode=verify-full (the default), or set PAGEQ_ALLOW_INSECURE_DB=1 to accept the risk"
            )
        return dsn, f"INSECURE: connection to {where} with sslmode={mode} (PAGEQ_ALLOW_INSECURE_DB=1)"
    if mode in ("require", "verify-ca"):
        return dsn, f"connection to {where} with sslmode={mode}: the server's host name is not verified"
    return dsn, None
