"""EstimateEvacuation: the drain of a host, from the agent's inputs (pure) to gRPC, the
client, the CLI and a live drain of the simulated host."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from migwatch.agent.backends.simulated import SimulatedBackend
from migwatch.agent.config import AgentConfig
from migwatch.agent.errors import MigrationGone
from migwatch.agent.estimate.drain import DrainEstimate, DrainOptions, NoBandwidth, estimate_drain
from migwatch.agent.estimate.etaconfig import EstimatorConfig, with_overhead
from migwatch.agent.estimate.evacuation import BandConfig
from migwatch.agent.model import (
    Convergence as AgentConvergence,
)
from migwatch.agent.model import (
    Direction,
    DomainFacts,
    Limits,
    Migration,
    Phase,
    Preflight,
)
from migwatch.agent.serve.server import running_agent
from migwatch.client import AgentClient, Convergence, EvacuationEstimate, InvalidArgument, cli
from migwatch.client.drain import DrainTracker
from migwatch.client.render import format_drain_progress, format_evacuation_summary
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

MIB = 1 << 20
ASYNC = pytest.mark.asyncio(loop_scope="function")
NOW = 1_800_000_000.0


def _config_for(overhead: int | None, teardown_s: float | None = None) -> EstimatorConfig:
    """As ``Tracker.config_for``: the default estimator with what the host learned."""
    return with_overhead(EstimatorConfig(), overhead, teardown_s)


def _facts(
    name: str, ram_mib: int, dirty_mib_s: float, bw_mib_s: float | None, measured: bool = True
) -> DomainFacts:
    rates = {p: dirty_mib_s for p in (1.0, 2.0, 4.0)}
    return DomainFacts(
        domain_uuid=f"00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}",
        domain_name=name,
        memory_bytes=ram_mib * MIB,
        disk_bytes=0,
        limits=Limits(0.3, None if bw_mib_s is None else int(bw_mib_s * MIB)),
        preflight=Preflight(NOW - 40.0, rates) if measured else None,
    )


# -- pure: from facts to the plan --------------------------------------------------------


def test_drain_plans_converging_guests_and_leaves_out_a_hot_one() -> None:
    """Calm guests are planned longest first; a guest dirtying faster than its link is left
    out, named, with its remedy; the one never measured is listed as such."""
    guests = [
        _facts("small", 512, 5, 100),
        _facts("big", 4096, 10, 100),
        _facts("hot", 2048, 150, 100),
        _facts("new", 1024, 0, 100, measured=False),
    ]
    d = estimate_drain(
        guests,
        (),
        DrainOptions(concurrency=2),
        _config_for,
        NOW,
        random.Random(0),
        BandConfig(draws=300),
    )
    assert d.order == ("big", "new", "small")
    assert d.blocking == ("hot",) and not d.empties
    hot = next(e for e in d.entries if e.domain_name == "hot")
    assert hot.convergence is AgentConvergence.NOT_CONVERGING and not hot.planned
    assert hot.recommendations and "left out" in hot.reason
    assert d.unmeasured == ("new",)
    assert d.oldest_measurement_age_s == pytest.approx(40.0)
    assert d.total.low <= d.total.central <= d.total.high
    big = next(e for e in d.entries if e.domain_name == "big")
    assert big.duration is not None and d.total.central >= big.duration.central


def test_drain_with_post_copy_plans_the_hot_guest() -> None:
    """Allowed post-copy, the hot guest is planned as switched after pass 1 and the host empties."""
    guests = [_facts("calm", 1024, 5, 100), _facts("hot", 2048, 150, 100)]
    d = estimate_drain(
        guests,
        (),
        DrainOptions(post_copy=True),
        _config_for,
        NOW,
        random.Random(0),
        BandConfig(draws=300),
    )
    hot = next(e for e in d.entries if e.domain_name == "hot")
    assert hot.planned and hot.post_copy_applied and d.empties
    # Every page once at 100 MiB/s, plus the low edge of the teardown after the job.
    teardown_low = 0.75 * EstimatorConfig().migration_overhead_s
    assert hot.duration is not None
    assert hot.duration.low == pytest.approx(2048 / 100 + teardown_low)


def test_drain_with_copy_storage_adds_each_guests_disk_copy_first() -> None:
    """With copy_storage each guest's disks go first at its bandwidth: its duration grows by
    disk / bandwidth (post-copy planned guests too), the reason says so, and a guest without
    disks is unchanged; without copy_storage the disks are not counted (shared storage)."""
    guests = [
        replace(_facts("disky", 1024, 5, 100), disk_bytes=2000 * MIB),
        _facts("diskless", 1024, 5, 100),
        replace(_facts("hot", 2048, 150, 100), disk_bytes=1000 * MIB),
    ]

    def drain(copy: bool) -> DrainEstimate:
        return estimate_drain(
            guests,
            (),
            DrainOptions(post_copy=True, copy_storage=copy),
            _config_for,
            NOW,
            random.Random(0),
            BandConfig(draws=300),
        )

    shared, local = drain(False), drain(True)
    by = {e.domain_name: e for e in local.entries}
    base = {e.domain_name: e for e in shared.entries}
    for name, disk_s in (("disky", 20.0), ("diskless", 0.0), ("hot", 10.0)):
        with_disk, without = by[name].duration, base[name].duration
        assert with_disk is not None and without is not None
        assert with_disk.central == pytest.approx(without.central + disk_s, abs=0.5), name
        assert ("disks first" in by[name].reason) == (disk_s > 0)
        assert "disks first" not in base[name].reason
    assert by["hot"].post_copy_applied
    assert local.total.central > shared.total.central + 29.0


def test_drain_adds_the_hosts_teardown_to_every_guest() -> None:
    """Each planned guest pays the teardown its host learned after its job (0.75x to 2x on the
    band's edges), so one at a time the total grows by it once per guest."""
    guests = [_facts(n, 1024, 5, 100) for n in ("a", "b", "c")]

    def drain(teardown_s: float) -> DrainEstimate:
        facts = [replace(g, migration_overhead_s=teardown_s) for g in guests]
        return estimate_drain(
            facts, (), DrainOptions(), _config_for, NOW, random.Random(0), BandConfig(draws=300)
        )

    bare, torn = drain(0.0), drain(4.0)
    for b, t in zip(bare.entries, torn.entries, strict=True):
        assert b.duration is not None and t.duration is not None
        assert t.duration.central == pytest.approx(b.duration.central + 4.0)
        assert t.duration.low == pytest.approx(b.duration.low + 3.0)
        assert t.duration.high == pytest.approx(b.duration.high + 8.0)
        assert "teardown" in t.reason and "teardown" not in b.reason
    assert torn.total.central == pytest.approx(bare.total.central + 3 * 4.0)


def test_drain_in_flight_holds_a_slot_with_its_live_eta() -> None:
    """A migration in flight is planned first with its live ETA; the guest waits for its slot
    to free, at that ETA plus the host's teardown after the job."""
    flying = Migration(
        id="x",
        domain_uuid="11111111-1111-1111-1111-111111111111",
        domain_name="moving",
        source_host="hv1",
        destination_host="hv2",
        direction=Direction.OUTGOING,
        phase=Phase.PRECOPY,
        backend="simulated",
        agent_host="hv1",
        eta_s=30.0,
        eta_low_s=25.0,
        eta_high_s=40.0,
        convergence=AgentConvergence.CONVERGING,
    )
    d = estimate_drain(
        [_facts("calm", 1024, 5, 100)],
        (flying,),
        DrainOptions(),
        _config_for,
        NOW,
        random.Random(0),
        BandConfig(draws=300),
    )
    assert [e.domain_name for e in d.entries] == ["moving", "calm"]
    teardown = EstimatorConfig().migration_overhead_s
    assert d.entries[0].in_flight and d.entries[1].start_s == pytest.approx(30.0 + teardown)


def test_drain_in_flight_without_live_eta_uses_its_prediction_less_elapsed() -> None:
    """Before its live ETA exists, a migration in flight counts with its pre-flight prediction
    less the time elapsed; one judged not converging is left out with its live remedies."""
    calm = _facts("calm", 1024, 5, 100)
    base = Migration(
        id="x",
        domain_uuid=calm.domain_uuid,
        domain_name="calm",
        source_host="hv1",
        destination_host="hv2",
        direction=Direction.OUTGOING,
        phase=Phase.SETUP,
        backend="simulated",
        agent_host="hv1",
        elapsed_s=2.0,
        limits=calm.limits,
    )
    alone = estimate_drain(
        [calm], (), DrainOptions(), _config_for, NOW, random.Random(0), BandConfig(draws=300)
    )
    early = estimate_drain(
        [calm], (base,), DrainOptions(), _config_for, NOW, random.Random(0), BandConfig(draws=300)
    )
    (entry,) = early.entries
    assert entry.in_flight and entry.planned and entry.duration is not None
    assert alone.entries[0].duration is not None
    assert entry.duration.central == pytest.approx(alone.entries[0].duration.central - 2.0)
    assert "pre-flight prediction" in entry.reason
    stuck = replace(base, phase=Phase.PRECOPY, convergence=AgentConvergence.NOT_CONVERGING)
    blocked = estimate_drain(
        [calm], (stuck,), DrainOptions(), _config_for, NOW, random.Random(0), BandConfig(draws=300)
    )
    assert blocked.blocking == ("calm",) and not blocked.entries[0].planned


def test_drain_shared_link_splits_bandwidth_and_fills_unlimited_guests() -> None:
    """On a shared 100 MiB/s link at concurrency 2 each migration gets 50 MiB/s, a guest with
    no limit included; without bandwidth or link such a guest is refused by name."""
    guests = [_facts("limited", 1024, 5, 80), _facts("free", 1024, 5, None)]
    d = estimate_drain(
        guests,
        (),
        DrainOptions(concurrency=2, link_bandwidth_bps=100 * MIB),
        _config_for,
        NOW,
        random.Random(0),
        BandConfig(draws=300),
    )
    assert {e.domain_name: e.bandwidth_bps for e in d.entries} == {
        "limited": 50 * MIB,
        "free": 50 * MIB,
    }
    with pytest.raises(NoBandwidth, match="free has no migration bandwidth"):
        estimate_drain(guests, (), DrainOptions(), _config_for, NOW, random.Random(0))


# -- client: drain progress (pure) ------------------------------------------------------


def _plan(entries: list[tuple[str, bool]], total: float | None) -> EvacuationEstimate:
    from migwatch.client import EtaBasis, EvacuationEntry

    return EvacuationEstimate(
        host="hv1",
        total_s=total,
        total_low_s=total,
        total_high_s=total,
        empties=True,
        entries=tuple(
            EvacuationEntry(
                f"u-{n}",
                n,
                flying,
                True,
                0,
                0.0,
                1.0,
                1.0,
                1.0,
                Convergence.CONVERGING,
                "",
                (),
                EtaBasis.PREFLIGHT,
                None,
                1,
                False,
            )
            for n, flying in entries
        ),
        order=(),
        blocking_domains=(),
        unmeasured_domains=(),
        oldest_measurement_age_s=None,
        newest_measurement_age_s=None,
        concurrency=1,
        link_bandwidth=0,
        order_given=False,
        band_method="",
    )


def test_drain_tracker_counts_who_left() -> None:
    """k of n: n is fixed by the first plan (and grows for arrivals), k counts those gone."""
    t = DrainTracker()
    p0 = t.apply(_plan([("a", False), ("b", False), ("c", False)], 90.0))
    assert (p0.moved, p0.total, p0.empty) == (0, 3, False)
    p1 = t.apply(_plan([("b", True), ("c", False)], 50.0))
    assert (p1.moved, p1.total, p1.moving) == (1, 3, ("b",))
    assert format_drain_progress(p1) == "hv1: 1 of 3 moved, 1 moving (b), ~50s (50s–50s) left"
    p2 = t.apply(_plan([("c", True), ("late", False)], 20.0))
    assert (p2.moved, p2.total) == (2, 4)
    stuck = t.apply(
        replace(
            _plan([("c", True)], 0.0),
            entries=(replace(_plan([("c", True)], 0.0).entries[0], planned=False),),
            blocking_domains=("c",),
        )
    )
    assert stuck.left_s is None and not stuck.empty
    assert format_drain_progress(stuck) == (
        "hv1: 3 of 4 moved, 1 moving (c); will not leave by itself: c"
    )
    p3 = t.apply(_plan([], 0.0))
    assert p3.empty and (p3.moved, p3.total) == (4, 4)
    assert format_drain_progress(p3) == "hv1: 4 of 4 moved, host empty"


# -- over gRPC, on the simulated host ---------------------------------------------------


def _idle_host(*idle: str, speed: float = 40.0) -> SimulatedBackend:
    """A simulated host with only idle guests (no scenario migrations), stepped fast."""
    return SimulatedBackend((), idle=idle, interval_s=0.05, speed=speed, repeat=False)


async def _left(backend: SimulatedBackend, name: str) -> bool:
    """The guest is neither idle nor migrating on the simulated host: it has left."""
    try:
        await backend.describe(name)
    except MigrationGone:
        return True
    return False


def _config() -> AgentConfig:
    return AgentConfig(listen="127.0.0.1:0", sample_interval_s=0.05, grace_s=0.2)


@ASYNC
async def test_evacuation_of_the_simulated_host_through_the_client() -> None:
    """The client gets one entry per guest, a total with a band, a shorter total at
    concurrency 2, the non-converging guest named with a remedy, and a given order kept."""
    backend = _idle_host("converging", "slow", "disk", "quick", "not-converging")
    async with (
        running_agent(_config(), backend) as agent,
        AgentClient(f"127.0.0.1:{agent.port}") as client,
    ):
        one = await client.estimate_evacuation()
        two = await client.estimate_evacuation(concurrency=2)
        subset = await client.estimate_evacuation(["sim-quick", "sim-converging"])
    for plan in (one, two):
        assert {e.domain_name for e in plan.entries} == {
            "sim-converging",
            "sim-slow",
            "sim-disk",
            "sim-quick",
            "sim-not-converging",
        }
        assert plan.total_s is not None and plan.total_low_s is not None
        assert plan.total_high_s is not None
        assert plan.total_low_s <= plan.total_s <= plan.total_high_s
        assert plan.blocking_domains == ("sim-not-converging",) and not plan.empties
        blocked = next(e for e in plan.entries if e.domain_name == "sim-not-converging")
        assert blocked.convergence is Convergence.NOT_CONVERGING and blocked.recommendations
        assert plan.order[0] == "sim-slow"
    assert one.total_s is not None and two.total_s is not None and two.total_s < one.total_s
    # At concurrency 1 the guests run back to back: the total is their sum.
    planned = [e.duration_s for e in one.entries if e.planned]
    assert one.total_s == pytest.approx(sum(d for d in planned if d is not None), rel=1e-6)
    assert subset.order_given and subset.order == ("sim-quick", "sim-converging")
    assert "left out" in format_evacuation_summary(one)


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (
            pb.EstimateEvacuationRequest(concurrency=0),
            "concurrency",
            "concurrency 0 is out of range",
        ),
        (pb.EstimateEvacuationRequest(concurrency=500), "concurrency", "1 to 64"),
        (pb.EstimateEvacuationRequest(domains=["ghost"]), "domains", "no simulated domain 'ghost'"),
        (
            pb.EstimateEvacuationRequest(domains=["sim-quick", "sim-quick"]),
            "domains",
            "more than once",
        ),
        (pb.EstimateEvacuationRequest(domains=[""]), "domains", "empty entry"),
        (
            pb.EstimateEvacuationRequest(
                domains=[str(uuid.uuid5(uuid.NAMESPACE_DNS, "sim-quick")), "sim-quick"]
            ),
            "domains",
            "same guest twice",
        ),
        (pb.EstimateEvacuationRequest(bandwidth=1000), "bandwidth", "below 1 MiB/s"),
        (pb.EstimateEvacuationRequest(link_bandwidth=5), "link_bandwidth", "below 1 MiB/s"),
    ],
)
@ASYNC
async def test_evacuation_invalid_arguments(
    request_: pb.EstimateEvacuationRequest, field: str, words: str
) -> None:
    """Each bad argument is INVALID_ARGUMENT with a BadRequest naming the field and what to fix."""
    async with (
        running_agent(_config(), _idle_host("quick", "converging")) as agent,
        grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.MigrationServiceStub(channel).EstimateEvacuation(request_)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in (err.value.details() or "")
    status = rpc_status.from_call(err.value)
    assert status is not None
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    assert detail.field_violations[0].field == field


@ASYNC
async def test_calling_again_mid_drain_replans_from_what_is_left() -> None:
    """Once a guest is migrating it is counted in flight with its live ETA; once it has left
    it is gone from the plan, and the tracker says 1 of 3 moved."""
    backend = _idle_host("converging", "quick", "disk", speed=10.0)
    async with (
        running_agent(_config(), backend) as agent,
        AgentClient(f"127.0.0.1:{agent.port}") as client,
    ):
        tracker = DrainTracker()
        before = await client.estimate_evacuation()
        assert tracker.apply(before).total == 3
        backend.migrate("sim-converging")
        flying = None
        for _ in range(200):  # past setup, the live estimator has an ETA
            plan = await client.estimate_evacuation()
            flying = next(e for e in plan.entries if e.domain_name == "sim-converging")
            if flying.in_flight and flying.duration_s is not None:
                break
            await asyncio.sleep(0.02)
        assert flying is not None and flying.in_flight and flying.duration_s is not None
        assert plan.entries[0].domain_name == "sim-converging"  # in flight first
        assert all(e.start_offset_s and e.start_offset_s > 0 for e in plan.entries[1:])
        assert tracker.apply(plan).moving == ("sim-converging",)
        for _ in range(400):
            plan = await client.estimate_evacuation()
            if "sim-converging" not in {e.domain_name for e in plan.entries}:
                break
            await asyncio.sleep(0.02)
        progress = tracker.apply(plan)
    assert (progress.moved, progress.total) == (1, 3)
    assert {e.domain_name for e in plan.entries} == {"sim-quick", "sim-disk"}
    assert before.total_s is not None and plan.total_s is not None
    assert plan.total_s < before.total_s


# -- CLI ---------------------------------------------------------------------------------


@ASYNC
async def test_cli_evacuate_estimate_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``migwatch evacuate-estimate`` prints the plan as a table, and one JSON object with
    --json."""
    async with running_agent(
        _config(), _idle_host("quick", "converging", "not-converging")
    ) as agent:
        target = f"127.0.0.1:{agent.port}"
        code = await asyncio.to_thread(
            cli.main, ["--agent", target, "evacuate-estimate", "--concurrency", "2"]
        )
        text = capsys.readouterr().out
        assert code == 0, text
        assert "2 at a time" in text and "sim-not-converging" in text and "left out" in text
        code = await asyncio.to_thread(
            cli.main, ["--agent", target, "evacuate-estimate", "--json", "--post-copy"]
        )
        data = json.loads(capsys.readouterr().out)
        assert code == 0 and data["agent"] == target and data["empties"] is True
        assert any(e["post_copy_applied"] for e in data["entries"])
        code = await asyncio.to_thread(
            cli.main, ["--agent", target, "evacuate-estimate", "--concurrency", "0"]
        )
        assert code == 1 and "concurrency 0" in capsys.readouterr().err
        code = await asyncio.to_thread(
            cli.main, ["--agent", target, "--agent", "127.0.0.1:1", "evacuate-estimate"]
        )
        assert code == 1 and "exactly one --agent" in capsys.readouterr().err


@ASYNC
async def test_cli_evacuate_estimate_with_copy_storage_counts_the_disks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--copy-storage`` asks for the disks to be copied too: the guest with a disk takes
    longer by its copy and says so, the diskless one is unchanged."""
    async with running_agent(_config(), _idle_host("quick", "disk")) as agent:
        target = f"127.0.0.1:{agent.port}"
        plans = {}
        for flags in ((), ("--copy-storage",)):
            code = await asyncio.to_thread(
                cli.main, ["--agent", target, "evacuate-estimate", "--json", *flags]
            )
            assert code == 0
            data = json.loads(capsys.readouterr().out)
            plans[bool(flags)] = {e["domain_name"]: e for e in data["entries"]}
    shared, local = plans[False], plans[True]
    assert local["sim-disk"]["duration_s"] > shared["sim-disk"]["duration_s"] + 1.0
    assert "disks first" in local["sim-disk"]["reason"]
    assert "disks first" not in shared["sim-disk"]["reason"]
    assert local["sim-quick"]["duration_s"] == pytest.approx(shared["sim-quick"]["duration_s"])


@ASYNC
async def test_cli_evacuate_estimate_draws_the_plan_as_svg(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--svg FILE`` writes the plan as a chart: one bar per planned guest in start order
    (two at a time: the second slot starts at 0 too), the total line inside its band, and
    the guest that would not converge listed as left out."""
    svg = tmp_path / "plan.svg"
    async with running_agent(
        _config(), _idle_host("quick", "converging", "not-converging")
    ) as agent:
        target = f"127.0.0.1:{agent.port}"
        code = await asyncio.to_thread(
            cli.main,
            ["--agent", target, "evacuate-estimate", "--concurrency", "2", "--svg", str(svg)],
        )
    capsys.readouterr()
    assert code == 0
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg.read_text())
    bars = [e for e in root.iter(f"{ns}rect") if e.get("class") == "bar"]
    assert len(bars) == 2
    assert len({b.get("x") for b in bars}) == 1, "two slots: both start now"
    (total,) = [e for e in root.iter(f"{ns}line") if e.get("class") == "total"]
    (band,) = [e for e in root.iter(f"{ns}rect") if e.get("class") == "total-band"]
    t = float(total.get("x1") or 0)
    assert (
        float(band.get("x") or 0) <= t <= float(band.get("x") or 0) + float(band.get("width") or 0)
    )
    left_out = [e.text or "" for e in root.iter(f"{ns}text") if e.get("class") == "left-out"]
    assert len(left_out) == 1 and "sim-not-converging" in left_out[0]


@ASYNC
async def test_cli_evacuate_estimate_svg_it_cannot_write_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--svg`` into a missing directory exits 1 with one line naming the file, no traceback."""
    svg = tmp_path / "no-such-dir" / "plan.svg"
    async with running_agent(_config(), _idle_host("quick")) as agent:
        target = f"127.0.0.1:{agent.port}"
        code = await asyncio.to_thread(
            cli.main, ["--agent", target, "evacuate-estimate", "--svg", str(svg)]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"--svg {svg}: cannot write it" in err[0]


@ASYNC
async def test_cli_drain_progress_follows_a_drain_to_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``migwatch drain-progress --json`` reports k of n moved while guests leave, and ends
    when the host is empty."""
    backend = _idle_host("quick", "quick", "converging", speed=20.0)
    async with running_agent(_config(), backend) as agent:
        target = f"127.0.0.1:{agent.port}"
        watcher = asyncio.create_task(
            asyncio.to_thread(
                cli.main, ["--agent", target, "drain-progress", "--json", "--interval", "0.05s"]
            )
        )
        await asyncio.sleep(0.3)
        for guest in ("sim-converging", "sim-quick", "sim-quick-2"):  # one at a time
            backend.migrate(guest)
            for _ in range(500):
                if await _left(backend, guest):
                    break
                await asyncio.sleep(0.02)
        code = await asyncio.wait_for(watcher, 30)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert (lines[0]["moved"], lines[0]["total"]) == (0, 3)
    assert lines[-1]["empty"] and lines[-1]["moved"] == 3
    moved = [line["moved"] for line in lines]
    assert moved == sorted(moved) and {1, 2} <= set(moved)


@ASYNC
async def test_cli_drain_progress_of_named_guests_counts_the_departed_as_moved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``drain-progress --domain ...`` follows only the named guests: one that has left is
    moved (not an unknown domain), and it ends when they are all gone, whatever else stays."""
    backend = _idle_host("quick", "converging", "disk", speed=20.0)
    async with running_agent(_config(), backend) as agent:
        target = f"127.0.0.1:{agent.port}"
        argv = ["--agent", target, "drain-progress", "--json", "--interval", "0.05s"]
        named = ["--domain", "sim-converging", "--domain", "sim-quick"]
        watcher = asyncio.create_task(asyncio.to_thread(cli.main, argv + named))
        await asyncio.sleep(0.3)
        for guest in ("sim-converging", "sim-quick"):
            backend.migrate(guest)
            for _ in range(500):
                if await _left(backend, guest):
                    break
                await asyncio.sleep(0.02)
        code = await asyncio.wait_for(watcher, 30)
        assert not await _left(backend, "sim-disk")  # not named: it stays
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, lines
    assert (lines[0]["moved"], lines[0]["total"]) == (0, 2)
    assert lines[-1]["empty"] and lines[-1]["moved"] == 2


@ASYNC
async def test_allow_departed_takes_a_named_guest_that_left_as_moved() -> None:
    """Once a named guest has left, naming it again is refused, unless allow_departed says
    the caller is re-planning a drain: then it is simply not in the plan."""
    backend = _idle_host("quick", "converging", speed=20.0)
    async with (
        running_agent(_config(), backend) as agent,
        AgentClient(f"127.0.0.1:{agent.port}") as client,
    ):
        assert len((await client.estimate_evacuation(["sim-quick"])).entries) == 1
        backend.migrate("sim-quick")
        for _ in range(500):
            if await _left(backend, "sim-quick"):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(InvalidArgument, match="sim-quick"):
            await client.estimate_evacuation(["sim-quick", "sim-converging"])
        plan = await client.estimate_evacuation(
            ["sim-quick", "sim-converging"], allow_departed=True
        )
    assert [e.domain_name for e in plan.entries] == ["sim-converging"]
