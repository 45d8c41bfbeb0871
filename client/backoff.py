"""Reconnect delays: exponential backoff with jitter. Pure; the caller passes randomness.

Jitter spreads reconnects of many clients after an agent restart so they do not
arrive in lockstep. The delay for attempt ``n`` (0-based) is drawn from
``[base·(1−jitter), base]`` with ``base = min(maximum, initial·multiplier**n)``:
never above ``maximum``, never below ``(1−jitter)·initial``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """A reconnect policy; ``delay(attempt, u)`` with ``u`` uniform in [0, 1)."""

    initial_s: float = 0.2
    maximum_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5  # share of the delay that is random, 0..1

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.maximum_s:
            raise ValueError("backoff needs 0 < initial_s <= maximum_s")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within 0..1")

    def base(self, attempt: int) -> float:
        """The delay before jitter for 0-based ``attempt``."""
        # Compare exponents instead of computing multiplier**attempt, which
        # overflows a float for a long outage.
        delay = self.initial_s
        for _ in range(max(0, attempt)):
            delay *= self.multiplier
            if delay >= self.maximum_s:
                return self.maximum_s
        return delay

    def delay(self, attempt: int, u: float) -> float:
        """Seconds to wait before reconnect ``attempt``; ``u`` is uniform in [0, 1)."""
        base = self.base(attempt)
        return base * (1.0 - self.jitter * min(max(u, 0.0), 1.0))


DEFAULT_BACKOFF = Backoff()
"""0.2 s doubling up to 10 s, half of each delay random."""
