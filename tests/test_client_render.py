"""The CLI's pure formatting and unit parsing: strings in, strings (or rich renderables) out."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from migwatch.client import render
from migwatch.client.model import (
    Action,
    AgentState,
    AgentStatus,
    AgentUpdate,
    Convergence,
    Direction,
    FleetMigration,
    FleetSnapshot,
    HostState,
    Migration,
    Phase,
    Recommendation,
    Transfer,
)
from migwatch.client.targets import parse_target, resolve_targets
from migwatch.client.units import (
    format_bytes,
    format_duration,
    format_rate,
    parse_bandwidth,
    parse_duration,
)
from rich.console import Console, RenderableType

MIB = 1 << 20


def text_of(renderable: RenderableType, width: int = 200) -> str:
    """What a terminal of ``width`` columns would show, without colours."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def migration(**overrides: object) -> Migration:
    base = Migration(
        id="a1823c35-4213-4f58-9463-51fe8ccabbf6.out.1795598854580",
        domain_uuid="a1823c35-4213-4f58-9463-51fe8ccabbf6",
        domain_name="db-7",
        source_host="hv1",
        destination_host="hv2",
        direction=Direction.OUTGOING,
        phase=Phase.PRECOPY,
        memory=Transfer(8 << 30, 6 << 30, 2 << 30, 120 * MIB, 0.62),
        dirty_rate_bytes_per_second=150 * MIB,
        iteration=4,
        eta_s=65.0,
        eta_low_s=58.0,
        eta_high_s=80.0,
        convergence=Convergence.NOT_CONVERGING,
        convergence_reason="dirtying 150 MiB/s against 120 MiB/s",
        recommendations=(
            Recommendation(Action.POST_COPY, "switch to post-copy: done in ~40 s"),
            Recommendation(Action.ABORT, "abort"),
        ),
        started_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "?"),
        (0.0, "0ms"),
        (0.85, "850ms"),
        (4.24, "4.2s"),
        (58.4, "58s"),
        (65.0, "1m05s"),
        (3599.0, "59m59s"),
        (3720.0, "1h02m"),
        (2 * 86400 + 3 * 3600, "2d03h"),
        (-3.0, "0ms"),
        (float("inf"), "∞"),
    ],
)
def test_format_duration(seconds: float | None, expected: str) -> None:
    """Durations read like 1m05s; unknown is '?'."""
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((65.0, 58.0, 80.0), "1m05s (58s–1m20s)"),
        ((65.0, None, None), "1m05s"),
        ((None, 1.0, 2.0), "unknown"),
    ],
)
def test_format_eta_with_band(args: tuple[float | None, ...], expected: str) -> None:
    """The ETA shows its honest band when the agent gives one."""
    assert render.format_eta(*args) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (120 * MIB, "120 MiB"), (2 << 30, "2.0 GiB")],
)
def test_format_bytes(n: int, expected: str) -> None:
    """Binary units with two to three significant digits."""
    assert format_bytes(n) == expected


def test_format_rate_shows_a_dash_for_zero() -> None:
    """A zero rate (nothing measured yet) is a dash, not '0 B/s'."""
    assert format_rate(0) == "–"
    assert format_rate(100 * MIB) == "100 MiB/s"


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.0, "░░░░░░░░░░   0%"), (0.6, "██████░░░░  60%"), (1.7, "██████████ 100%")],
)
def test_format_bar_is_clamped(fraction: float, expected: str) -> None:
    """Bars fill proportionally and clamp at 0..100 %."""
    assert render.format_bar(fraction) == expected


def test_format_transfer_dash_when_nothing_to_copy() -> None:
    """Shared storage (no disk to copy) shows a dash instead of an empty bar."""
    assert render.format_transfer(Transfer()) == "–"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (" 250 ms ", 0.25),
        ("100us", 1e-4),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Human durations become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("500", "give a unit"),
        ("fast", "expected a number and a unit"),
        ("5 parsecs", "bad duration"),
        ("", "bad"),
    ],
)
def test_parse_duration_rejects_with_one_line(text: str, needle: str) -> None:
    """Bad durations raise ValueError with one helpful line."""
    with pytest.raises(ValueError, match=needle) as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100MiB/s", 100 * MIB),
        ("100 MiB", 100 * MIB),
        ("1.5GB/s", 1_500_000_000),
        ("10Gbit/s", 1_250_000_000),
        ("800Mbps", 100_000_000),
        ("64KiB/s", 64 * 1024),
        ("2gib/s", 2 << 30),
    ],
)
def test_parse_bandwidth(text: str, bps: int) -> None:
    """Byte and bit rates, decimal and binary prefixes, become bytes per second."""
    assert parse_bandwidth(text) == bps


@pytest.mark.parametrize("text", ["100", "100M", "lots", "1.5 MiB/min", "-5MiB/s"])
def test_parse_bandwidth_rejects_ambiguous_or_bad_units(text: str) -> None:
    """Missing or ambiguous units are refused with one line, never guessed."""
    with pytest.raises(ValueError, match="bad bandwidth") as info:
        parse_bandwidth(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        (["hv1:50051"], "x:1", ("hv1:50051",)),
        (None, "hv1:50051, hv2:50051,,hv1:50051", ("hv1:50051", "hv2:50051")),
        (None, "", ("127.0.0.1:50051",)),
        (["[::1]:50051"], "", ("[::1]:50051",)),
    ],
)
def test_resolve_targets(explicit: list[str] | None, env: str, expected: tuple[str, ...]) -> None:
    """--agent wins over MIGWATCH_AGENTS, which wins over the default; duplicates drop."""
    assert resolve_targets(explicit, {"MIGWATCH_AGENTS": env}) == expected


@pytest.mark.parametrize("bad", ["hv1", "hv1:port", ":50051", "hv1:70000", "::1:50051"])
def test_parse_target_rejects_bad_addresses(bad: str) -> None:
    """A target must be HOST:PORT with a valid port ([v6]:port for IPv6)."""
    with pytest.raises(ValueError, match="bad agent address"):
        parse_target(bad)


def test_short_ids_are_unique_prefixes() -> None:
    """Short ids are 8 characters unless a longer prefix is needed to tell ids apart."""
    ids = ["aaaaaaaa-1.out.1", "aaaaaaaa-1.out.2", "bbbbbbbbbbbb"]
    assert render.short_ids(ids) == {
        "aaaaaaaa-1.out.1": "aaaaaaaa-1.out.1",
        "aaaaaaaa-1.out.2": "aaaaaaaa-1.out.2",
        "bbbbbbbbbbbb": "bbbbbbbb",
    }


def test_fleet_table_shows_every_column_a_watcher_needs() -> None:
    """A row has domain, hosts, phase, both bars, rates, pass, ETA band, verdict and advice."""
    m = migration()
    fm = FleetMigration(m.domain_uuid, m.domain_name, "hv1", "hv2", source=m, source_agent="a:1")
    text = text_of(render.format_fleet_table((fm,), show_ids=True))
    for needle in (
        "a1823c35",
        "db-7",
        "hv1 → hv2",
        "precopy",
        "pass 4",
        "62%",
        "120 MiB/s",
        "dirty 150 MiB/s",
        "1m05s",
        "(58s–1m20s)",
        "not converging: dirtying 150 MiB/s",
        "→ switch to post-copy",
    ):
        assert needle in text, needle
    assert "abort" not in text  # only the top recommendation


@pytest.mark.parametrize("width", [80, 100, 129])
def test_narrow_terminals_keep_the_verdict_and_the_progress(width: int) -> None:
    """Below 130 columns the table sheds the rates, then the bars, but never the verdict, the
    recommendation, the ETA or memory and disk progress apart; no line is wider than the
    terminal."""
    m = migration()
    fm = FleetMigration(m.domain_uuid, m.domain_name, "hv1", "hv2", source=m, source_agent="a:1")
    text = text_of(render.format_fleet_table((fm, fm), show_ids=True), width=width)
    flat = " ".join(text.split())
    for needle in ("db-7", "pass 4", "62%", "1m05s", "not converging", "switch to post-copy"):
        assert needle in flat, (needle, text)
    assert "dirty 150 MiB/s" not in text  # the rates column went first
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width


@pytest.mark.parametrize("width", [80, 100, 109, 110, 129, 139, 140])
def test_long_names_with_ids_never_cut_the_verdict_s_words(width: int) -> None:
    """With ids (as ``list`` shows them) and real-length domain and host names, every word of
    the verdict and the id stay whole at any width; below 110 columns the id moves under the
    hosts rather than squeezing the verdict column."""
    m = replace(
        migration(),
        domain_name="sim-not-converging-3",
        source_host="sim-host-a",
        destination_host="sim-host-b",
    )
    fm = FleetMigration(
        m.domain_uuid,
        m.domain_name,
        m.source_host,
        m.destination_host,
        source=m,
        source_agent="a:1",
    )
    text = text_of(render.format_fleet_table((fm,), show_ids=True), width=width)
    words = set(text.split())
    for word in ("a1823c35", *m.convergence_reason.split()):
        assert word.strip(";:,") in {w.strip(";:,") for w in words}, (word, text)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width


@pytest.mark.parametrize("width", [80, 140])
def test_an_auto_converge_throttle_is_shown(width: int) -> None:
    """QEMU throttling the guest is the workload's cost of auto-converge: table and detail
    both show it."""
    m = replace(migration(), auto_converge_throttle_percent=60)
    fm = FleetMigration(m.domain_uuid, m.domain_name, "hv1", "hv2", source=m, source_agent="a:1")
    assert "throttle 60%" in text_of(render.format_fleet_table((fm,)), width=width)
    assert "guest CPU throttled 60 % (auto-converge)" in render.format_migration(m)
    assert "throttle" not in text_of(
        render.format_fleet_table(
            (
                FleetMigration(
                    m.domain_uuid,
                    m.domain_name,
                    "hv1",
                    "hv2",
                    source=migration(),
                    source_agent="a:1",
                ),
            )
        )
    )


def test_fleet_screen_shows_agents_and_stale_rows() -> None:
    """The watch screen names unreachable agents and marks rows from them stale."""
    m = migration()
    fm = FleetMigration(m.domain_uuid, m.domain_name, "hv1", "hv2", source=m, stale=True)
    agents = (
        AgentState("hv1:50051", reachable=False, error="no message for 15 s"),
        AgentState(
            "hv2:50051",
            reachable=True,
            synced=True,
            status=AgentStatus("hv2", "libvirt", HostState.OK),
        ),
    )
    text = text_of(render.format_fleet(FleetSnapshot(agents=agents, migrations=(fm,))))
    assert "hv1:50051 UNREACHABLE: no message for 15 s" in text
    assert "hv2:50051 up (libvirt)" in text
    assert "precopy (stale)" in text


def test_empty_fleet_says_so() -> None:
    """No active migrations is said in words, not an empty table."""
    snap = FleetSnapshot(agents=(AgentState("hv1:50051"),), migrations=())
    text = text_of(render.format_fleet(snap))
    assert "no active migrations" in text and "hv1:50051 connecting" in text


def test_format_agent_degraded() -> None:
    """An agent that cannot reach its hypervisor is shown DEGRADED with its reason."""
    state = AgentState(
        "hv1:50051",
        reachable=True,
        status=AgentStatus("hv1", "libvirt", HostState.DEGRADED, "down 5 s"),
    )
    assert render.format_agent(state) == "hv1:50051 DEGRADED: down 5 s"


def test_format_migration_detail_names_everything() -> None:
    """``get`` output lists id, agent, both transfers, ETA with basis, verdict and remedies."""
    text = render.format_migration(migration(error_message="", actual_downtime_s=None), "hv1:50051")
    assert "(agent hv1:50051)" in text
    assert "ETA 1m05s (58s–1m20s) [unknown]" in text
    assert "recommend    post_copy: switch to post-copy" in text
    assert "abort: abort" in text


def test_a_finished_migration_says_finished_not_a_zero_eta() -> None:
    """``get`` of a finished migration shows it finished, not ``ETA 0ms (0ms–0ms)``."""
    m = migration(phase=Phase.COMPLETED, eta_s=0.0, eta_low_s=0.0, eta_high_s=0.0)
    text = render.format_migration(m, "hv1:50051")
    assert "finished" in text and "ETA" not in text


def test_json_lines_are_plain_data() -> None:
    """JSON output uses lower-case enum names, ISO times, and tags kind and agent."""
    line = render.format_json(render.migration_to_jsonable(migration(), "hv1:50051"))
    data = json.loads(line)
    assert "\n" not in line
    assert data["agent"] == "hv1:50051"
    assert data["phase"] == "precopy" and data["convergence"] == "not_converging"
    assert data["started_at"] == "2026-11-25T10:00:00+00:00"
    assert data["recommendations"][0]["action"] == "post_copy"
    update = AgentUpdate("hv1:50051", AgentState("hv1:50051", error="refused"))
    assert render.update_to_jsonable(update)["kind"] == "agent status"


def test_fleet_migration_json_has_id_and_phase() -> None:
    """A joined record's JSON carries its derived id and phase too."""
    m = migration()
    fm = FleetMigration(m.domain_uuid, m.domain_name, "hv1", "hv2", source=m)
    data = render.to_jsonable(fm)
    assert data["id"] == m.id and data["phase"] == "precopy"


@pytest.mark.asyncio(loop_scope="function")
async def test_redraw_live_draws_on_updates_and_on_the_tick_without_them() -> None:
    """The live table (``watch``, ``listen --fleet``) redraws when updates arrive, at most
    every REFRESH_S, and again within TICK_S while none arrive, so staleness shows."""
    import asyncio

    from migwatch.client.cli_common import REFRESH_S, TICK_S, redraw_live
    from rich.live import Live

    calls: list[float] = []
    snap = FleetSnapshot(agents=(), migrations=())

    def snapshot() -> FleetSnapshot:
        calls.append(asyncio.get_running_loop().time())
        return snap

    async def updates() -> AsyncIterator[object]:
        for i in range(50):  # a burst: far more than one redraw per REFRESH_S
            yield i
        await asyncio.Event().wait()  # then silence

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with Live(render.format_fleet(snap), console=console, auto_refresh=False) as live:
        task = asyncio.create_task(redraw_live(live, updates(), snapshot))
        await asyncio.sleep(TICK_S * 2.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert 2 <= len(calls) <= 4, calls  # once for the burst, then once per silent tick
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(g >= REFRESH_S for g in gaps) and all(g <= TICK_S * 1.5 for g in gaps), gaps
