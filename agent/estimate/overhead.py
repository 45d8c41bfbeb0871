"""Learn the hypervisor process's resident memory that is not guest RAM. Pure: no I/O.

The estimator turns the source QEMU's resident memory (``rss``) into the guest's non-zero
bytes by subtracting an overhead: QEMU's binary, heap and, under TCG, its code cache
(``EstimatorConfig.resident_overhead_bytes``). That overhead is a property of the host (QEMU
build, accelerator), not of the guest: 174-179 MiB on every lab guest under TCG, far less
under KVM. So a configured constant is right on one host and wrong on the next.

Every completed migration measures it after the fact: pass 1 sent each never-written page
as a zero page (the completed stats' ``memory_constant``), so ``memory_total - memory_constant
x page_size`` is what was non-zero, and ``rss`` at the start minus that is the overhead. The
median of the last few such readings replaces the configured value; pages first written
during the migration make a reading low, so one odd migration does not move the median.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from statistics import median


@dataclass
class ResidentOverhead:
    """The overhead learned from this host's completed migrations (see the module docstring)."""

    window: int = 9  # readings kept; the median of an odd count is one of them
    min_readings: int = 1
    _readings: deque[float] = field(default_factory=deque)

    def learn(
        self, *, resident_bytes: int | None, memory_total: int, zero_pages: int, page_size: int
    ) -> float | None:
        """Take one completed migration; returns its reading, or ``None`` if it says nothing
        (no rss, no memory counters, or a reading outside what is physically possible)."""
        if not resident_bytes or memory_total <= 0 or zero_pages < 0 or page_size <= 0:
            return None
        non_zero = memory_total - min(zero_pages * page_size, memory_total)
        reading = float(resident_bytes - non_zero)
        # Below 0 the guest wrote much new memory during the migration; above the rss the
        # counters are not this guest's: neither is a reading of the overhead.
        if not 0.0 <= reading <= resident_bytes:
            return None
        self._readings.append(reading)
        while len(self._readings) > self.window:
            self._readings.popleft()
        return reading

    def value(self) -> int | None:
        """The learned overhead in bytes, or ``None`` until enough migrations completed."""
        if len(self._readings) < self.min_readings:
            return None
        return int(median(self._readings))

    @property
    def readings(self) -> int:
        return len(self._readings)
