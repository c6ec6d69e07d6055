"""Retry policies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from pageq.errors import InvalidOptionError

MAX_DELAY = 10 * 365 * 86400.0
"""The longest delay a policy may produce (what a `timedelta` added to now can hold comfortably)."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with an optional cap and full jitter.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(cap, base ** n)`` seconds, spread by ``jitter`` (a fraction: 0.1 means +-10 %).

    Example::

        @app.task(retry=pageq.Backoff.exponential(base=2.0, cap=3600, jitter=True))
        def sync_crm(account_id: int) -> None: ...
    """

    base: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.1
    factor: float = 1.0
    _rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def exponential(
        cls,
        base: float = 2.0,
        cap: float = 3600.0,
        jitter: bool | float = True,
        factor: float = 1.0,
    ) -> Backoff:
        """``factor * base ** attempt`` seconds, at most ``cap``; jitter True means +-10 %."""
        spread = 0.1 if jitter is True else float(jitter or 0.0)
        if not (1.0 <= base < math.inf and 0 <= cap <= MAX_DELAY and 0 <= factor < math.inf
                and 0.0 <= spread < 1.0):  # fmt: skip
            raise InvalidOptionError(
                f"backoff needs base >= 1, 0 <= cap <= {MAX_DELAY:g}, factor >= 0 and 0 <= jitter < 1"
            )
        return cls(base=base, cap=cap, jitter=spread, factor=factor)

    @classmethod
    def constant(cls, seconds: float) -> Backoff:
        """The same delay before every retry."""
        if not 0 <= seconds <= MAX_DELAY:
            raise InvalidOptionError(f"a constant backoff needs 0 <= seconds <= {MAX_DELAY:g}")
        return cls(base=1.0, cap=seconds, jitter=0.0, factor=seconds)

    def nominal(self, attempt: int) -> float:
        """The delay without jitter after ``attempt`` failed attempts (attempt >= 1)."""
        try:
            raw = self.factor * float(self.base) ** attempt
        except OverflowError:  # a huge attempt count: the cap applies
            return float(self.cap) if self.factor else 0.0
        return float(min(self.cap, raw))

    def delay(self, attempt: int) -> float:
        """The delay to wait after ``attempt`` failed attempts, jitter applied."""
        nominal = self.nominal(attempt)
        if not self.jitter:
            return nominal
        return max(0.0, nominal * (1.0 + self._rng.uniform(-self.jitter, self.jitter)))


DEFAULT_BACKOFF = Backoff.exponential()
