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

What a reading must not be learned from: resident memory that over-states the guest's
non-zero bytes. QEMU backs guest RAM with transparent huge pages, so one 4 KiB page a guest
touched makes 2 MiB resident; a guest whose programs touch memory everywhere (a 2 GiB guest
with rss 1.9 GiB that sent 815 MiB as zero pages) gives a "reading" of hundreds of MiB that
is the model's error (rss taken for non-zero bytes), not QEMU's memory. Learned as the
overhead and applied to the next guests it would make a model error a per-host constant.
So a reading above ``ceiling_bytes`` (more than QEMU's own memory can plausibly be: 174-179
MiB under TCG in the lab, less under KVM) is rejected and counted as loose
(``loose_readings``), never learned.
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
    # The most QEMU's own resident memory can plausibly be (binary, heap, TCG code cache):
    # above it a reading says resident memory was loose (huge pages), not what QEMU uses.
    ceiling_bytes: int = 256 * 1024 * 1024
    loose_readings: int = 0  # rejected readings above ``ceiling_bytes``
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
        if reading > self.ceiling_bytes:
            self.loose_readings += 1  # rss over-stated the non-zero bytes: not an overhead
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
