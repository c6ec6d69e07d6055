"""What a served API may be tuned with: body limits, batch size, request rate, signing keys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pageq.errors import ConfigError
from pageq.security.signing import SigningKey, keys_from_env

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Limits and credentials of the HTTP API (``pageq serve`` options, or `create_app(settings=...)`).

    ``max_body``: bytes a request body may have (413 beyond, before any database work); ``max_batch``: jobs
    per batch enqueue; ``max_depth``: nesting of a JSON body; ``rate``/``burst``: requests per second each
    principal may make (429 beyond; None: no limit); ``signing_keys``: keys of signed requests.
    """

    max_body: int = MIB
    max_batch: int = 1000
    max_depth: int = 64
    rate: float | None = None
    burst: int = 50
    signing_keys: dict[str, SigningKey] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_body <= 1024 * MIB:
            raise ConfigError(f"max_body must be 1 byte to 1 GiB, got {self.max_body!r}")
        if not 1 <= self.max_batch <= 100_000 or not 2 <= self.max_depth <= 512:
            raise ConfigError("max_batch must be 1 to 100000 and max_depth 2 to 512")
        if self.rate is not None and not (0 < self.rate <= 1_000_000 and 1 <= self.burst <= 1_000_000):
            raise ConfigError("rate must be positive and burst at least 1")

    @classmethod
    def from_env(
        cls, *, max_body: int = MIB, max_batch: int = 1000, rate: float | None = None, burst: int = 50
    ) -> Settings:
        """Settings with the signing keys of ``PAGEQ_HTTP_KEYS`` / ``PAGEQ_HTTP_KEYS_FILE``."""
        keys = keys_from_env(dict(os.environ))
        return cls(max_body=max_body, max_batch=max_batch, rate=rate, burst=burst, signing_keys=keys)
