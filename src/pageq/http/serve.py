"""``pageq serve``: uvicorn in front of `create_app`, refusing what would expose the API unprotected.

A non-loopback bind needs a TLS certificate (TLS 1.2 at least) unless ``insecure`` is said, and some
credentials (a live token or a signing key): with none configured the API is served on loopback only.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl

import uvicorn

import pageq
from pageq.http import create_app
from pageq.http.settings import Settings

log = logging.getLogger("pageq.http")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(
    app: pageq.App, host: str, settings: Settings, *, tls: bool, insecure: bool
) -> None:  # fmt: skip
    """`ConfigError` for a bind that would expose the API without TLS or without any credentials."""
    if is_loopback(host):
        return
    if not tls and not insecure:
        raise pageq.ConfigError(
            f"refusing to serve on {host} without TLS: give --tls-cert and --tls-key (or --insecure)"
        )
    if not tls:
        log.warning("INSECURE: serving the API on %s without TLS (--insecure)", host)
    live = [t for t in app.security.tokens() if t[4] is None]
    if not live and not settings.signing_keys:
        raise pageq.ConfigError(
            f"refusing to serve on {host}: no credentials are configured (create a token with "
            "`pageq tokens create`); without any, the API is served on loopback only"
        )


def serve(
    app: pageq.App, host: str = "127.0.0.1", port: int = 8000, *, settings: Settings | None = None,
    tls_cert: str | None = None, tls_key: str | None = None, insecure: bool = False,
) -> None:  # fmt: skip
    """Serve ``app`` until interrupted."""
    settings = settings or Settings.from_env()
    if (tls_cert is None) != (tls_key is None):
        raise pageq.ConfigError("give both --tls-cert and --tls-key")
    check_bind(app, host, settings, tls=tls_cert is not None, insecure=insecure)
    config = uvicorn.Config(
        create_app(app, settings), host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
        log_level="info", server_header=False, proxy_headers=False,
        timeout_graceful_shutdown=5,  # the dashboard's event streams would otherwise hold a shutdown up
    )  # fmt: skip
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()
