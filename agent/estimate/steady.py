"""Verdicts a person can act on: hysteresis over the per-sample verdict. Pure.

``advice.verdict`` judges each sample on its own. On a guest whose dirty rate sits near the
bandwidth (a key-value store dirtying 71 MiB/s against 80 MiB/s) that judgement flips with
every wobble of either rate: STALLED, CONVERGING, STALLED... 32 times in 140 s. A verdict an
operator acts on (abort, raise the downtime) must not do that. ``SteadyVerdict`` shows a
verdict and changes it only on evidence that outweighs the last change:

* Verdicts fall in classes: CONVERGING, SLOW, flagged (STALLED or NOT_CONVERGING) and
  UNKNOWN. Moving between the two flagged kinds, or out of UNKNOWN into a first decided
  verdict, is free: neither tells the operator the opposite of what they were told.
* Any other change is a *reversal*. The per-sample verdict must disagree with the one shown
  at every sample over ``needed`` pass boundaries in a row (a boundary is when the job stats
  carry a new dirty-rate measurement: the unit of evidence), and ``needed`` doubles with
  each reversal already made: 1, 2, 4, 8... A reading that agrees with the verdict shown
  starts the count again. So a migration whose readings alternate never reverses, and one
  with n passes reverses at most about log2(n) times.
* The first reversal (a first verdict proven wrong by the next pass) needs one boundary, so
  a flag still comes within a pass of the evidence.
* "Not falling" (the remaining at the pass boundaries has not fallen for several passes,
  too short a while to call a stall) is UNKNOWN, but a CONVERGING shown gives way to it at
  once: whatever one pass's rates say, such a migration is not shown as converging. It
  counts as a reversal and sides with the flags: a STALLED after it is free, a CONVERGING
  after it needs the evidence any reversal needs.
* A new fact is not a wobble: when the situation itself changes (QEMU reports its first
  auto-converge throttle, an operator changes the bandwidth or the max downtime), the
  caller says so (``new_facts``) and the next change is free: it follows the new facts at
  once and is not counted as a reversal.

The verdict shown keeps the per-sample reason when they agree; when the shown verdict is held
against the per-sample one, the reason says so and gives both. Invariants: ``reversals`` only
grows; a reversal happens only when ``streak >= needed`` at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from migwatch.agent.model import Convergence

_FLAGGED = frozenset({Convergence.STALLED, Convergence.NOT_CONVERGING})


def verdict_class(conv: Convergence) -> str:
    """The class of a verdict: changes inside a class are not reversals."""
    if conv in _FLAGGED:
        return "flagged"
    return conv.name.lower()


@dataclass(frozen=True, slots=True)
class Shown:
    """The verdict shown after one sample."""

    convergence: Convergence
    reason: str
    held: bool  # shown against the per-sample verdict (the evidence is not yet enough)


class SteadyVerdict:
    """Hysteresis over per-sample verdicts of one migration (see the module docstring).

    Args:
        first_needed: pass boundaries of unbroken disagreement the first reversal needs;
            each later reversal needs twice the one before.
    """

    def __init__(self, first_needed: int = 1) -> None:
        self._first = max(first_needed, 1)
        self.shown: Convergence = Convergence.UNKNOWN
        self._reason = ""
        self.reversals = 0
        self._streak_from: int | None = None  # the iteration at which disagreement began
        self._streak_class: str | None = None
        self._free = False  # the next change follows new facts (``new_facts``)
        self._demoted = False  # UNKNOWN shown because the remaining stopped falling

    def new_facts(self) -> None:
        """The situation changed (a throttle, a new limit): the next change is free."""
        self._free = True

    @property
    def needed(self) -> int:
        """Boundaries of unbroken disagreement the next reversal needs."""
        return self._first << self.reversals

    def update(
        self, raw: Convergence, reason: str, iteration: int, *, against_converging: bool = False
    ) -> Shown:
        """Take the per-sample verdict at a sample of pass ``iteration``; returns the shown.

        ``against_converging``: an UNKNOWN that is evidence against CONVERGING (the
        remaining stopped falling): a CONVERGING shown gives way to it at once."""
        # "Not falling" sides with the flags: going on to one is no reversal, going back to
        # CONVERGING is one.
        shown_cls = "flagged" if self._demoted else verdict_class(self.shown)
        raw_cls = verdict_class(raw)
        if (
            raw_cls == shown_cls
            or (self.shown is Convergence.UNKNOWN and not self._demoted)
            or (self._free and raw is not Convergence.UNKNOWN)
        ):
            self._free = self._free and raw_cls == shown_cls
            self._demoted = False
            self.shown, self._reason = raw, reason
            self._streak_from = self._streak_class = None
            return Shown(raw, reason, held=False)
        if raw is Convergence.UNKNOWN:
            if against_converging and self.shown is Convergence.CONVERGING:
                # The remaining has stopped falling: whatever the rates say, not converging.
                # It takes back what was shown, so it counts as a reversal.
                self.reversals += 1
                self._demoted = True
                self.shown, self._reason = raw, reason
                self._streak_from = self._streak_class = None
                return Shown(raw, reason, held=False)
            # The sample cannot judge (no ETA yet, a new limit): it neither supports nor
            # contradicts what is shown.
            return Shown(self.shown, self._reason, held=False)
        if self._streak_class != raw_cls or self._streak_from is None:
            self._streak_from, self._streak_class = iteration, raw_cls
        streak = iteration - self._streak_from
        if streak >= self.needed:
            self.reversals += 1
            self._demoted = False
            self.shown, self._reason = raw, reason
            self._streak_from = self._streak_class = None
            return Shown(raw, reason, held=False)
        return Shown(
            self.shown,
            (
                f"{self._reason} [held: now reads {raw.name} ({reason}); it must hold over"
                f" {self.needed - streak} more pass boundary(ies) to change the verdict,"
                f" which has changed {self.reversals} time(s)]"
            ),
            held=True,
        )
