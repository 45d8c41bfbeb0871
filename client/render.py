"""Pure ``format_*`` functions for the CLI: strings and rich renderables, no output."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from .drain import DrainProgress
from .model import (
    AgentState,
    Convergence,
    EvacuationEntry,
    EvacuationEstimate,
    FleetMigration,
    FleetSnapshot,
    ForceCompleteMethod,
    HostState,
    Migration,
    MigrationEstimate,
    Transfer,
    Update,
)
from .units import format_bytes, format_duration, format_rate

_VERDICT = {
    Convergence.UNKNOWN: "unknown",
    Convergence.CONVERGING: "converging",
    Convergence.SLOW: "slow",
    Convergence.STALLED: "stalled",
    Convergence.NOT_CONVERGING: "not converging",
}
_VERDICT_STYLE = {
    Convergence.UNKNOWN: "dim",
    Convergence.CONVERGING: "green",
    Convergence.SLOW: "yellow",
    Convergence.STALLED: "red",
    Convergence.NOT_CONVERGING: "bold red",
}


def enum_name(value: enum.Enum) -> str:
    """``Phase.DISK_MIRROR`` -> ``disk_mirror``: the spelling used in JSON and tables."""
    return value.name.lower()


def format_eta(eta_s: float | None, low_s: float | None = None, high_s: float | None = None) -> str:
    """``1m05s (58s–1m20s)``; just ``1m05s`` without a band; ``unknown`` without an ETA."""
    if eta_s is None:
        return "unknown"
    if low_s is None or high_s is None:
        return format_duration(eta_s)
    return f"{format_duration(eta_s)} ({format_duration(low_s)}–{format_duration(high_s)})"


def format_bar(fraction: float, width: int = 10) -> str:
    """A text progress bar with percentage: ``██████░░░░  60%``; clamped to 0..100 %."""
    f = min(1.0, max(0.0, fraction))
    filled = round(f * width)
    return f"{'█' * filled}{'░' * (width - filled)} {f * 100:3.0f}%"


def format_transfer(t: Transfer, width: int = 10) -> str:
    """A bar for a memory or disk transfer; ``–`` when there is nothing to copy."""
    return "–" if t.total_bytes == 0 else format_bar(t.fraction_done, width)


def format_hosts(source_host: str, destination_host: str) -> str:
    """``hv1 → hv2``."""
    return f"{source_host or '?'} → {destination_host or '?'}"


def format_verdict(convergence: Convergence, reason: str = "") -> str:
    """``not converging: dirty rate 1.2 GiB/s ≥ link 1.1 GiB/s``; the bare verdict without a
    reason."""
    verdict = _VERDICT[convergence]
    return f"{verdict}: {reason}" if reason else verdict


def format_recommendation(m: Migration | None) -> str:
    """The top recommendation's summary, or ``""``."""
    if m is None or not m.recommendations:
        return ""
    return m.recommendations[0].summary


def format_agent(state: AgentState) -> str:
    """One agent's reachability in a few words: ``hv1:50051 up (libvirt)``."""
    if state.reachable:
        s = state.status
        if s is not None and s.state is HostState.DEGRADED:
            return f"{state.target} DEGRADED: {s.message or 'hypervisor unreachable'}"
        word = "up" if state.synced else "syncing"
        backend = f" ({s.backend})" if s is not None and s.backend else ""
        return f"{state.target} {word}{backend}"
    if not state.error:
        return f"{state.target} connecting"
    return f"{state.target} UNREACHABLE: {state.error}"


def format_agents(agents: tuple[AgentState, ...]) -> Text:
    """All agents on one line, problems in red."""
    text = Text("agents: ", style="bold")
    for i, a in enumerate(agents):
        if i:
            text.append(" · ")
        ok = a.reachable and (a.status is None or a.status.state is not HostState.DEGRADED)
        text.append(format_agent(a), style="green" if ok else "red")
    return text


def _phase_text(m: FleetMigration) -> str:
    phase = enum_name(m.phase).replace("_", "-")
    return f"{phase} (stale)" if m.stale else phase


def short_ids(ids: list[str], minimum: int = 8) -> dict[str, str]:
    """The shortest prefix (at least ``minimum`` long) telling each id apart from the others.

    ``migwatch get`` and the control commands accept such a prefix.
    """
    out: dict[str, str] = {}
    for i in ids:
        n = min(minimum, len(i))
        while n < len(i) and any(o != i and o.startswith(i[:n]) for o in ids):
            n += 1
        out[i] = i[:n]
    return out


#: Terminal widths (columns) below which the table sheds detail, so that the verdict and
#: recommendation, what an operator acts on, always stay on screen.
_WIDE = 130  # everything: progress bars, transfer and dirty rates
_MEDIUM = 100  # no rates column (``migwatch get`` has them); shorter bars
# The id column (8 characters and its padding) comes out of the same budget; below
# _MEDIUM + _ID_COLUMN the id goes under the hosts instead, or rich would squeeze the
# verdict column below the width its text was wrapped at and cut words off.
_ID_COLUMN = 10


def format_fleet_table(
    migrations: tuple[FleetMigration, ...], *, show_ids: bool = False, title: str | None = None
) -> RenderableType:
    """The migrations table, rows in the given order (``FleetSnapshot`` is worst first).

    Two lines per migration keep it narrow: hosts, phase and pass, ETA and band, and
    verdict and top recommendation each stack; only the last column wraps. The layout is
    chosen at render time from the terminal's width (and again on every refresh of
    ``watch``): narrower terminals lose the rates, then the progress bars (the phase
    column keeps the percentages), never the verdict.
    """
    return _FleetTable(migrations, show_ids, title)


@dataclasses.dataclass(frozen=True)
class _FleetTable:
    migrations: tuple[FleetMigration, ...]
    show_ids: bool
    title: str | None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _fleet_table(self.migrations, self.show_ids, self.title, options.max_width)


def _fleet_table(
    migrations: tuple[FleetMigration, ...], show_ids: bool, title: str | None, width: int
) -> Table:
    id_column = show_ids and width - _ID_COLUMN >= _MEDIUM
    budget = width - _ID_COLUMN if id_column else width
    wide, medium = budget >= _WIDE, budget >= _MEDIUM
    table = Table(
        title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True
    )
    if id_column:
        table.add_column("id", no_wrap=True)
    table.add_column(
        "domain / hosts", no_wrap=True, max_width=None if wide else 24, overflow="ellipsis"
    )
    table.add_column("phase / pass", no_wrap=True)
    if medium:
        table.add_column("memory / disk", no_wrap=True)
    if wide:
        table.add_column("rate / dirty", justify="right", no_wrap=True)
    table.add_column("ETA (band)", justify="right", no_wrap=True)
    table.add_column("verdict → top recommendation", min_width=20 if not wide else 28, ratio=1)
    ids = short_ids([m.id for m in migrations])
    bar = 8 if wide else 5
    for fm in migrations:
        src = fm.source
        cells: list[RenderableType] = [ids[fm.id]] if id_column else []
        domain = Text(fm.domain_name or fm.domain_uuid)
        domain.append(f"\n{format_hosts(fm.source_host, fm.destination_host)}", style="dim")
        if show_ids and not id_column:
            domain.append(f"\nid {ids[fm.id]}")
        cells += [domain, _phase_cell(fm, with_progress=not medium)]
        if medium:
            cells.append(
                f"mem  {format_transfer(src.memory, bar)}\ndisk {format_transfer(src.disk, bar)}"
                if src
                else "?"
            )
        if wide:
            cells.append(
                f"{format_rate(src.memory.bytes_per_second + src.disk.bytes_per_second)}\n"
                f"dirty {format_rate(src.dirty_rate_bytes_per_second)}"
                if src
                else "?"
            )
        cells += [_eta_cell(src), _advice_cell(fm)]
        table.add_row(*cells, style="dim" if fm.stale else None)
    return table


def _phase_cell(fm: FleetMigration, *, with_progress: bool) -> str:
    src = fm.source
    if src is None:
        return _phase_text(fm)
    throttle = (
        f" throttle {src.auto_converge_throttle_percent}%"
        if src.auto_converge_throttle_percent
        else ""
    )
    if not with_progress:
        return f"{_phase_text(fm)}\npass {src.iteration}{throttle}"

    # No room for bars: the memory and disk percentages, still apart.
    def pct(t: Transfer) -> str:
        return "–" if t.total_bytes == 0 else f"{t.fraction_done * 100:.0f}%"

    return (
        f"{_phase_text(fm)}{throttle}\npass {src.iteration} m {pct(src.memory)} d {pct(src.disk)}"
    )


def _eta_cell(src: Migration | None) -> str:
    if src is None:
        return "?"
    band = format_eta(src.eta_s, src.eta_low_s, src.eta_high_s)
    return band.replace(" (", "\n(", 1)


def _advice_cell(fm: FleetMigration) -> Text:
    src = fm.source
    verdict = format_verdict(fm.convergence, src.convergence_reason if src else "")
    advice = Text(verdict, style=_VERDICT_STYLE[fm.convergence])
    if recommendation := format_recommendation(src):
        advice.append(f"\n→ {recommendation}", style="bold")
    return advice


def format_fleet(snapshot: FleetSnapshot, *, show_ids: bool = False) -> RenderableType:
    """The whole watch screen: agents' reachability, then the table (or a quiet note)."""
    parts: list[RenderableType] = [format_agents(snapshot.agents)]
    if snapshot.migrations:
        parts.append(format_fleet_table(snapshot.migrations, show_ids=show_ids))
    else:
        parts.append(Text("no active migrations", style="dim"))
    return Group(*parts)


def format_migration(m: Migration, agent: str = "") -> str:
    """A multi-line, human description of one migration end (for ``migwatch get``)."""
    bandwidth = format_rate(m.max_bandwidth) if m.max_bandwidth else "unlimited"
    lines = [
        f"{m.domain_name or m.domain_uuid}  {format_hosts(m.source_host, m.destination_host)}",
        f"  id           {m.id}" + (f"  (agent {agent})" if agent else ""),
        (
            f"  direction    {enum_name(m.direction)}   phase {enum_name(m.phase)}"
            f"   backend {m.backend or '?'}"
        ),
        (
            f"  memory       {format_transfer(m.memory, 20)}  {format_bytes(m.memory.total_bytes)}"
            f"  remaining {format_bytes(m.memory.remaining_bytes)}"
        ),
        f"  disk         {format_transfer(m.disk, 20)}  {format_bytes(m.disk.total_bytes)}",
        (
            f"  rate         {format_rate(m.memory.bytes_per_second + m.disk.bytes_per_second)}"
            f"   dirty {format_rate(m.dirty_rate_bytes_per_second)}   iteration {m.iteration}"
            + (
                f"   guest CPU throttled {m.auto_converge_throttle_percent} % (auto-converge)"
                if m.auto_converge_throttle_percent
                else ""
            )
        ),
        (
            f"  elapsed      {format_duration(m.elapsed_s)}"
            + (
                "   finished"  # its ETA would be 0: nothing left to predict
                if m.final
                else f"   ETA {format_eta(m.eta_s, m.eta_low_s, m.eta_high_s)}"
                f" [{enum_name(m.eta_basis)}]"
            )
        ),
        f"  verdict      {format_verdict(m.convergence, m.convergence_reason)}",
        (
            f"  downtime     expected {format_duration(m.expected_downtime_s)}"
            f"   max {format_duration(m.max_downtime_s)}   bandwidth max {bandwidth}"
        ),
    ]
    if m.actual_downtime_s is not None:
        lines.append(f"  downtime     actual {format_duration(m.actual_downtime_s)}")
    if m.error_message:
        lines.append(f"  error        {m.error_message}")
    for i, r in enumerate(m.recommendations):
        lines.append(f"  {'recommend' if i == 0 else '':<12} {enum_name(r.action)}: {r.summary}")
    return "\n".join(lines)


def format_estimate(e: MigrationEstimate, agent: str = "") -> str:
    """A multi-line prediction (for ``migwatch estimate``)."""
    if e.measured_at is not None:
        measured = (
            f"{format_rate(e.dirty_rate_bytes_per_second)} dirtied"
            + (f", hot set ~{format_bytes(e.hot_set_bytes)}" if e.hot_set_bytes else "")
            + f", measured {format_duration(e.measurement_age_s)} ago"
        )
    else:
        measured = "not measured yet: a dirty rate is assumed (wide band)"
    lines = [
        f"{e.domain_name or e.domain_uuid}" + (f"  (agent {agent})" if agent else ""),
        (
            f"  predicted    {format_eta(e.duration_s, e.duration_low_s, e.duration_high_s)}"
            f"   [{enum_name(e.basis)}]"
            if e.duration_s is not None
            else "  predicted    never completes by itself"
        ),
        f"  verdict      {format_verdict(e.convergence, e.reason)}",
        (
            f"  inputs       memory {format_bytes(e.memory_bytes)}"
            + (f", disk {format_bytes(e.disk_bytes)}" if e.disk_bytes else "")
            + f", bandwidth {format_rate(e.bandwidth)}"
            + f", max downtime {format_duration(e.max_downtime_s)}"
        ),
        f"  dirty rate   {measured}",
    ]
    for i, r in enumerate(e.recommendations):
        lines.append(f"  {'to converge' if i == 0 else '':<12} {enum_name(r.action)}: {r.summary}")
    return "\n".join(lines)


def _band(central: float | None, low: float | None, high: float | None) -> str:
    """Like ``format_eta``, but a missing high edge next to a value is open: ``∞``."""
    if central is None:
        return "never by itself"
    return format_eta(
        central, low if low is not None else central, high if high is not None else math.inf
    )


def format_evacuation_summary(e: EvacuationEstimate, agent: str = "") -> str:
    """One line: when the host is empty, how, and what blocks it."""
    moving = sum(1 for x in e.entries if x.in_flight)
    planned = sum(1 for x in e.entries if x.planned and not x.in_flight)
    where = e.host + (f" (agent {agent})" if agent else "")
    if not e.entries:
        return f"{where}: empty: no guest left to move"
    how = f"{e.concurrency} at a time" + (
        f" sharing {format_rate(e.link_bandwidth)}" if e.link_bandwidth else ""
    )
    counts = f"{planned} to move" + (f", {moving} moving" if moving else "")
    if planned + moving == 0:
        return f"{where}: never empty by itself: {', '.join(e.blocking_domains)} will not leave"
    verb = "empty in" if e.empties else "all but the left-out guests gone in"
    line = f"{where}: {verb} {_band(e.total_s, e.total_low_s, e.total_high_s)}, {how}; {counts}"
    if e.blocking_domains:
        line += f"; left out: {', '.join(e.blocking_domains)} (will not converge; see remedy)"
    return line


def _entry_row(x: EvacuationEntry) -> list[RenderableType]:
    if x.in_flight:
        order, start = "→", "moving"
    elif x.planned:
        order, start = str(x.order), f"+{format_duration(x.start_offset_s)}"
    else:
        order, start = "✗", "left out"
    if x.in_flight:
        basis = "live"
    elif x.measurement_age_s is not None:
        basis = f"{format_duration(x.measurement_age_s)} ago"
    else:
        basis = "never: assumed"
    note = ""
    if x.post_copy_applied:
        note = "post-copy after pass 1"
    elif not x.planned:
        note = "see remedy below" if x.recommendations else "no remedy known"
    return [
        order,
        x.domain_name or x.domain_uuid,
        start,
        _band(x.duration_s, x.duration_low_s, x.duration_high_s),
        Text(_VERDICT[x.convergence], style=_VERDICT_STYLE[x.convergence]),
        basis,
        note,
    ]


def format_evacuation(e: EvacuationEstimate, agent: str = "") -> RenderableType:
    """The plan as a table (for ``migwatch evacuate-estimate``), with its summary line and
    what it leaned on."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("#", "guest", "start", "duration (band)", "verdict", "measured"):
        table.add_column(col, no_wrap=True)
    table.add_column("note", overflow="fold")
    for x in e.entries:
        table.add_row(*_entry_row(x))
    notes = [
        f"{x.domain_name}: {enum_name(x.recommendations[0].action)}: {x.recommendations[0].summary}"
        for x in e.entries
        if not x.planned and x.recommendations
    ]
    if e.unmeasured_domains:
        notes.append(f"dirty rate assumed (never measured): {', '.join(e.unmeasured_domains)}")
    if e.oldest_measurement_age_s is not None:
        newest = format_duration(e.newest_measurement_age_s)
        oldest = format_duration(e.oldest_measurement_age_s)
        notes.append(f"measurements {newest if newest == oldest else f'{newest}–{oldest}'} old")
    notes.append(
        ("order as given" if e.order_given else "order: longest first") + f"; band: {e.band_method}"
    )
    return Group(
        Text(format_evacuation_summary(e, agent), style="bold"),
        table,
        *(Text(n, style="dim") for n in notes),
    )


def format_drain_progress(p: DrainProgress) -> str:
    """``hv1: 3 of 7 moved, 2 moving (vm3, vm5), ~4m10s (3m20s–6m00s) left``."""
    line = f"{p.host}: {p.moved} of {p.total} moved"
    if p.empty:
        return line + ", host empty"
    if p.moving:
        line += f", {len(p.moving)} moving ({', '.join(p.moving)})"
    if p.left_s is not None:
        line += f", ~{_band(p.left_s, p.left_low_s, p.left_high_s)} left"
    if p.blocking:
        line += f"; will not leave by itself: {', '.join(p.blocking)}"
    return line


def format_action_result(
    verb: str, m: Migration, agent: str, method: ForceCompleteMethod | None = None
) -> str:
    """One line confirming a control: ``aborted vm1 (id 7) on hv1:50051: phase cancelled``."""
    how = f" by {enum_name(method).replace('_', '-')}" if method is not None else ""
    return (
        f"{verb} {m.domain_name or m.domain_uuid} (id {m.id}) on {agent}{how}: "
        f"phase {enum_name(m.phase)}"
    )


# -- JSON -------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for client records: enums as lower-case names, datetimes as
    ISO 8601, tuples as lists; ``FleetMigration`` also gets ``id`` and ``phase``."""
    if isinstance(value, enum.Enum):
        return enum_name(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, FleetMigration):
            out["id"] = value.id
            out["phase"] = enum_name(value.phase)
        return out
    return value


def format_json(value: Any) -> str:
    """One compact JSON line (no newline) for a record or plain data."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False)


def update_to_jsonable(update: Update) -> dict[str, Any]:
    """A fleet update as JSON data, tagged with ``kind`` and ``agent``."""
    body = to_jsonable(update)
    assert isinstance(body, dict)
    return {"kind": update.kind, **body}


def migration_to_jsonable(m: Migration, agent: str) -> dict[str, Any]:
    """One migration end as JSON data, tagged with the ``agent`` target that has it."""
    body = to_jsonable(m)
    assert isinstance(body, dict)
    return {"agent": agent, **body}
