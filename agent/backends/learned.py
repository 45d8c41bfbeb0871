"""What a backend learned about its host, kept across agent restarts (``--state-dir``).

Both real backends learn from completed migrations (pure learners in
``estimate/overhead.py``): QEMU's own share of resident memory (libvirt and QMP, from the
completed job stats, libvirt's keys in both), and the teardown after each job's clock stops
(libvirt, from the source's STOPPED event). ``HostLearning`` is that one path: it feeds the
learners, logs what they learned, and keeps it. Both take a migration each to learn; without this
file a restarted agent forgets them and falls back to the configured defaults until the
next migrations complete. One small JSON file beside the finals' database, written whole
(temporary file, then rename) after each new reading, so a crash leaves the old or the new
version, never half of one. An unreadable file is logged and ignored: it is only a head
start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from migwatch.agent.estimate.overhead import ResidentOverhead, TeardownTime
from migwatch.agent.model import MIB

log = logging.getLogger(__name__)

#: The file's name in the state directory.
FILE_NAME = "learned.json"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Learned:
    """The learners' readings, oldest first."""

    resident_overhead_bytes: tuple[float, ...] = ()
    teardown_s: tuple[float, ...] = ()


class LearnedFile:
    """``learned.json`` in a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def load(self) -> Learned:
        """What the previous run kept; empty when there is no file or it cannot be read."""
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("version") != _VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {_VERSION}")
            return Learned(
                tuple(float(v) for v in doc.get("resident_overhead_bytes", ())),
                tuple(float(v) for v in doc.get("teardown_s", ())),
            )
        except FileNotFoundError:
            return Learned()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s (starting from the defaults): %s", self.path, exc)
            return Learned()

    def save(self, learned: Learned) -> None:
        """Write ``learned`` whole; a failure is logged, never raised (it is a head start)."""
        doc = {
            "version": _VERSION,
            "resident_overhead_bytes": list(learned.resident_overhead_bytes),
            "teardown_s": list(learned.teardown_s),
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not keep what this host taught (%s): %s", self.path, exc)


class HostLearning:
    """The learners of one host's properties, fed by its backend, kept in ``state_dir``'s
    ``learned.json`` when one is given (restored on start)."""

    def __init__(self, state_dir: str = "") -> None:
        self.overhead = ResidentOverhead()
        self.teardown = TeardownTime()
        self._file = LearnedFile(Path(state_dir)) if state_dir else None
        if self._file is None:
            return
        kept = self._file.load()
        self.overhead.restore(kept.resident_overhead_bytes)
        self.teardown.restore(kept.teardown_s)
        if self.overhead.readings or self.teardown.readings:
            log.info(
                "kept from earlier runs (%s): QEMU resident overhead %s, teardown %s",
                self._file.path,
                f"{(self.overhead.value() or 0) / MIB:.0f} MiB" if self.overhead.readings
                else "not yet learned",
                f"{self.teardown.value() or 0.0:.1f} s" if self.teardown.readings
                else "not yet learned",
            )  # fmt: skip

    def completed_job(
        self, name: str, resident_bytes: int | None, stats: Mapping[str, object]
    ) -> None:
        """A completed outgoing migration of ``name``: its final job stats (libvirt's keys)
        and the source QEMU's resident memory when the job was found."""

        def num(key: str, default: int) -> int:
            v = stats.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else default

        loose = self.overhead.loose_readings
        reading = self.overhead.learn(
            resident_bytes=resident_bytes,
            memory_total=num("memory_total", 0),
            zero_pages=num("memory_constant", -1),
            page_size=num("memory_page_size", 4096) or 4096,
        )
        if reading is not None:
            self._keep()
            log.info(
                "QEMU resident overhead from the migration of %s: %.0f MiB (now using %.0f"
                " MiB, median of %d)", name, reading / MIB,
                (self.overhead.value() or 0) / MIB, self.overhead.readings,
            )  # fmt: skip
        elif self.overhead.loose_readings > loose:
            log.info(
                "resident memory of %s over-stated its non-zero RAM (huge pages?): not"
                " learned as QEMU's overhead", name,
            )  # fmt: skip

    def stopped_after_job(self, name: str, job_end_at: float, stopped_at: float) -> None:
        """The source of ``name`` stopped at ``stopped_at`` after its job ended at
        ``job_end_at`` (same clock, s): a teardown reading."""
        reading = self.teardown.learn(job_end_at=job_end_at, stopped_at=stopped_at)
        if reading is not None:
            self._keep()
            log.info(
                "teardown after the job of %s: %.1f s (now using %.1f s, median of %d)",
                name, reading, self.teardown.value() or 0.0, self.teardown.readings,
            )  # fmt: skip

    def _keep(self) -> None:
        if self._file is not None:
            self._file.save(Learned(self.overhead.history, self.teardown.history))
