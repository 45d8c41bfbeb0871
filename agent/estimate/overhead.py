"""What a host's completed migrations teach about it. Pure: no I/O.

``ResidentOverhead``: the hypervisor process's resident memory that is not guest RAM.
``TeardownTime``: how long a migration goes on after its job's clock stops.

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import median


@dataclass
class _RecentReadings:
    """The last ``window`` plausible readings of one property of the host; their median is
    what the host has taught (``min_readings`` needed). The two learners below differ only
    in how a completed migration becomes a reading and which readings are plausible."""

    window: int = 9  # readings kept; the median of an odd count is one of them
    min_readings: int = 1
    _readings: deque[float] = field(default_factory=deque)

    def _plausible(self, reading: float) -> bool:
        raise NotImplementedError

    def _keep(self, reading: float) -> float:
        self._readings.append(reading)
        while len(self._readings) > self.window:
            self._readings.popleft()
        return reading

    def _median(self) -> float | None:
        return float(median(self._readings)) if len(self._readings) >= self.min_readings else None

    @property
    def readings(self) -> int:
        return len(self._readings)

    @property
    def history(self) -> tuple[float, ...]:
        """The readings kept, oldest first: what a restarted agent restores."""
        return tuple(self._readings)

    def restore(self, readings: Iterable[float]) -> None:
        """Take readings a previous run kept (``history``); implausible ones are dropped."""
        for r in readings:
            if self._plausible(r):
                self._keep(float(r))


@dataclass
class ResidentOverhead(_RecentReadings):
    """The overhead learned from this host's completed migrations (see the module docstring)."""

    # The most QEMU's own resident memory can plausibly be (binary, heap, TCG code cache):
    # above it a reading says resident memory was loose (huge pages), not what QEMU uses.
    ceiling_bytes: int = 256 * 1024 * 1024
    loose_readings: int = 0  # rejected readings above ``ceiling_bytes``

    def _plausible(self, reading: float) -> bool:
        return 0.0 <= reading <= self.ceiling_bytes

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
        return self._keep(reading)

    def value(self) -> int | None:
        """The learned overhead in bytes, or ``None`` until enough migrations completed."""
        learned = self._median()
        return None if learned is None else int(learned)


@dataclass
class TeardownTime(_RecentReadings):
    """Learn how long a migration goes on after its job's own clock stops. Pure: no I/O.

    Every prediction and live ETA is of the job's ``time_elapsed``, but a drain waits for
    more: after the switch-over libvirt finishes the destination and confirms on the
    source, which stops the source QEMU; only then does the migrate call return and the next
    guest's slot free. That tail is a property of the host (QEMU build, accelerator, load):
    1.2-2.2 s on the TCG lab. Each completed outgoing migration measures it: from the job's
    end (its start plus the completed ``time_elapsed``) to the source domain's STOPPED
    event. The median of the last few readings replaces the configured
    ``EstimatorConfig.migration_overhead_s``.
    """

    max_reading_s: float = 120.0  # beyond this the stop was not the migration's teardown

    def _plausible(self, reading: float) -> bool:
        return 0.0 <= reading <= self.max_reading_s

    def learn(self, *, job_end_at: float, stopped_at: float) -> float | None:
        """Take one completed migration's job end and its source's stop (same clock, s);
        returns its reading, or ``None`` if it says nothing (outside 0..max_reading_s)."""
        reading = stopped_at - job_end_at
        # Below 0: the stop was seen before the job's end (clock rounding of a few 0.1 s is
        # kept as 0); far above: the domain stopped for another reason later on.
        if not -0.5 <= reading <= self.max_reading_s:
            return None
        return self._keep(max(reading, 0.0))

    def value(self) -> float | None:
        """The learned tail in seconds, or ``None`` until enough migrations completed."""
        return self._median()
