"""Progress of a host drain, from successive evacuation plans. Pure: no I/O, no clock.

The agent re-plans from what is left each time ``EstimateEvacuation`` is called, but it
does not remember who was there: ``DrainTracker`` does. The first plan fixes the guests to
move; each later plan says which are still on the host (planned, in flight or left out).
Invariants: ``moved + len(moving) + len(waiting) == total``, and ``total`` never shrinks
(a guest that arrives mid-drain is added: it has to leave too).
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import EvacuationEstimate


@dataclass(frozen=True, slots=True)
class DrainProgress:
    """Where a drain stands: ``moved`` of ``total`` guests gone, ~``left_s`` to go."""

    host: str
    total: int  # guests seen on the host since the drain began
    moved: int  # of those, no longer on the host
    moving: tuple[str, ...]  # names migrating now
    waiting: tuple[str, ...]  # names still idle on the host (planned or left out)
    blocking: tuple[str, ...]  # names that will not leave by themselves
    left_s: float | None  # until every guest that leaves by itself has; None: none is left
    left_low_s: float | None
    left_high_s: float | None
    empty: bool  # nothing is left on the host


class DrainTracker:
    """Turns each new evacuation plan of one host into a ``DrainProgress``."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}  # domain UUID -> name, since the first plan

    def apply(self, plan: EvacuationEstimate) -> DrainProgress:
        present = {e.domain_uuid: e for e in plan.entries}
        for domain_uuid, e in present.items():
            self._seen.setdefault(domain_uuid, e.domain_name)
        moving = tuple(e.domain_name for e in plan.entries if e.in_flight)
        waiting = tuple(e.domain_name for e in plan.entries if not e.in_flight)
        nothing_left = not plan.entries
        # Only guests that would not leave by themselves are left: no time can be given.
        stuck = not nothing_left and not any(e.planned for e in plan.entries)
        return DrainProgress(
            host=plan.host,
            total=len(self._seen),
            moved=sum(1 for u in self._seen if u not in present),
            moving=moving,
            waiting=waiting,
            blocking=plan.blocking_domains,
            left_s=0.0 if nothing_left else None if stuck else plan.total_s,
            left_low_s=0.0 if nothing_left else None if stuck else plan.total_low_s,
            left_high_s=0.0 if nothing_left else None if stuck else plan.total_high_s,
            empty=nothing_left,
        )
