"""How a worker delivers webhooks: the address allow-list and the retry policy."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pageq.retry import Backoff
from pageq.security.ssrf import Network, parse_allow

TASK = "pageq.webhook"
"""The built-in task that delivers webhooks (its events never reach webhooks or listeners themselves)."""
QUEUE = "pageq.webhooks"
"""The queue of deliveries; workers acting as the database owner serve it unless told not to."""
DEFAULT_RETRY = Backoff.exponential(base=2.0, cap=3600.0)
"""2, 4, 8 ... seconds between attempts, at most an hour: with 16 attempts, about 5 hours of retries."""


@dataclass(frozen=True)
class WebhookSettings:
    """Delivery settings of the workers of an app: which private addresses deliveries may reach (none by
    default: only global addresses), how long to wait between attempts, and how long to resolve a host.

    Example::

        app = pageq.App(webhook_settings=pageq.WebhookSettings(allow=["10.1.2.0/24"]))
    """

    allow: Sequence[str] = ()
    """Addresses or networks (CIDR) that deliveries may reach although they are not global
    (``PAGEQ_WEBHOOKS_ALLOW``, comma-separated)."""
    retry: Backoff = DEFAULT_RETRY
    resolve_timeout: float = 5.0
    networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", parse_allow(self.allow))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookSettings:
        """The allow-list of ``PAGEQ_WEBHOOKS_ALLOW``, defaults otherwise."""
        env = os.environ if environ is None else environ
        raw = env.get("PAGEQ_WEBHOOKS_ALLOW", "")
        return cls(allow=tuple(part.strip() for part in raw.replace(" ", ",").split(",") if part.strip()))
