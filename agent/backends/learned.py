"""What a backend learned about its host, kept across agent restarts (``--state-dir``).

The libvirt backend learns two properties of its host from completed migrations (pure
learners in ``estimate/overhead.py``): QEMU's own share of resident memory, and the
teardown after each job's clock stops. Both take a migration each to learn; without this
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
from dataclasses import dataclass
from pathlib import Path

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
