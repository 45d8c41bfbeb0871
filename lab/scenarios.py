"""The standard set of recorded traces (`make lab-record`, `python -m lab.record set`).

It varies RAM (384-1152 MiB), fill, hot set, dirty rate and bandwidth (30-120
MiB/s): converging runs with rate/bandwidth from 0 to ~0.75, runs that never
converge (aborted at 25 s), one rescued by a larger max downtime and one by a
higher bandwidth, storage copies and a post-copy. About half carry pre-flight
dirty-rate measurements. Each migration takes seconds to ~40 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.guest import GuestSpec, WorkloadSpec
from lab.migrate import Action, MigrationSpec

#: The shared traces' pre-flight periods (TRACE_FORMAT.md); a scenario may ask for more.
PREFLIGHT_PERIODS_S = (1, 2, 4)


@dataclass(frozen=True)
class Scenario:
    """One trace to record: the guest, the migration and how to observe it."""

    label: str
    scenario: str  # kind: converge, nonconverge-abort, postcopy, storage, ...
    guest: GuestSpec
    migration: MigrationSpec
    preflight: bool = False
    # Longer periods see the hot set saturate when 4 s is too short for it (mw4 set).
    preflight_periods_s: tuple[int, ...] = PREFLIGHT_PERIODS_S
    settle_s: float = 2.0
    timeout_s: float = 120.0
    interval_s: float = 0.25
    note: str = ""
    # Real-program guests fill their page cache and load their data before they say
    # ready: that can take minutes under TCG.
    boot_timeout_s: float = 120.0


def _sc(
    label: str,
    kind: str,
    mem: int,
    fill: int,
    ws: int,
    rate: int,
    bw: int,
    *,
    preflight: bool = False,
    disk: int = 0,
    disk_fill: int = 0,
    disk_rate: int = 0,
    postcopy_bw: int | None = None,
    auto_converge: bool = False,
    actions: tuple[Action, ...] = (),
    note: str = "",
    name: str = "lab1",
    periods: tuple[int, ...] = PREFLIGHT_PERIODS_S,
    timeout_s: float = 120.0,
) -> Scenario:
    guest = GuestSpec(
        name=name,
        mem_mib=mem,
        fill_mib=fill,
        ws_mib=ws,
        rate=rate,
        disk_mib=disk,
        disk_rate=disk_rate,
        disk_fill_mib=disk_fill,
    )
    migration = MigrationSpec(
        name=name,
        bandwidth_mib_s=bw,
        storage=bool(disk),
        postcopy=postcopy_bw is not None,
        postcopy_bandwidth_mib_s=postcopy_bw,
        auto_converge=auto_converge,
        actions=actions,
    )
    return Scenario(
        label=label,
        scenario=kind,
        guest=guest,
        migration=migration,
        preflight=preflight,
        preflight_periods_s=periods,
        note=note,
        timeout_s=timeout_s,
    )


STANDARD_SET: list[Scenario] = [
    _sc("mw-idle384", "idle", 384, 300, 300, 0, 30, note="idle guest, slow link"),
    _sc("mw-conv-low", "converge", 640, 480, 256, 10, 60, preflight=True, note="rate/bw 0.17"),
    _sc("mw-conv-mid", "converge", 1024, 720, 384, 25, 80, preflight=True, note="rate/bw 0.31"),
    _sc("mw-conv-high", "converge", 768, 560, 192, 40, 60, preflight=True, note="rate/bw 0.67"),
    _sc("mw-conv-fast", "converge", 1152, 800, 64, 30, 120, note="big guest, small hot set"),
    _sc("mw-conv-slowbw", "converge", 512, 384, 128, 12, 30, preflight=True, note="rate/bw 0.4"),
    _sc(
        "mw-hard",
        "converge",
        896,
        600,
        288,
        40,
        55,
        preflight=True,
        note="rate/bw 0.73, many iterations",
    ),
    _sc(
        "mw-nc-abort1",
        "nonconverge-abort",
        1024,
        700,
        256,
        150,
        45,
        preflight=True,
        actions=(Action(25, "abort"),),
        note="never converges; aborted",
    ),
    _sc(
        "mw-nc-abort2",
        "nonconverge-abort",
        640,
        480,
        160,
        120,
        40,
        actions=(Action(25, "abort"),),
        note="never converges; aborted",
    ),
    _sc(
        "mw-downtime",
        "downtime",
        768,
        512,
        48,
        150,
        50,
        actions=(Action(18, "downtime", 1500),),
        note="stuck at ~hot set remaining; max downtime 1500 ms lets it switch over",
    ),
    _sc(
        "mw-speedup",
        "speed",
        640,
        400,
        200,
        50,
        30,
        preflight=True,
        actions=(Action(24, "speed", 120),),
        note="does not converge at 30 MiB/s; bandwidth raised to 120 MiB/s",
    ),
    _sc(
        "mw-storage1",
        "storage",
        512,
        256,
        96,
        8,
        60,
        preflight=True,
        disk=384,
        disk_fill=192,
        disk_rate=3,
        note="NBD disk copy first, then memory",
    ),
    _sc(
        "mw-storage2",
        "storage",
        448,
        300,
        64,
        15,
        90,
        disk=256,
        disk_fill=128,
        disk_rate=2,
        note="NBD disk copy first, then memory",
    ),
    _sc(
        "mw-postcopy",
        "postcopy",
        896,
        640,
        224,
        160,
        50,
        postcopy_bw=25,
        actions=(Action(15, "postcopy"),),
        note="switch to post-copy at 15 s",
    ),
]


def _mw2(
    label: str, kind: str, mem: int, fill: int, ws: int, rate: int, bw: int, **kw: Any
) -> Scenario:
    return _sc(label, kind, mem, fill, ws, rate, bw, name="rss2", **kw)


#: Second set (``mw2-*``): every trace carries a ``memstats`` line (the source QEMU's
#: resident memory before the migrate call). Fill varies from ~15 % to ~80 % of RAM so the
#: never-written share does; one hot set reaches beyond the filled region (pages first
#: written while migrating: resident memory at the start under-counts them).
MW2_SET: list[Scenario] = [
    _mw2("mw2-idle-lowfill", "idle", 768, 128, 128, 0, 60, note="mostly never written"),
    _mw2("mw2-conv-a", "converge", 1024, 300, 192, 15, 80, preflight=True, note="30 % filled"),
    _mw2("mw2-conv-b", "converge", 640, 470, 128, 20, 60, preflight=True, note="73 % filled"),
    _mw2("mw2-conv-c", "converge", 896, 400, 256, 30, 90, note="45 % filled"),
    _mw2("mw2-conv-d", "converge", 512, 200, 96, 10, 40, preflight=True, note="39 % filled"),
    _mw2("mw2-conv-e", "converge", 1152, 700, 128, 40, 120, preflight=True, note="61 % filled"),
    _mw2("mw2-hard", "converge", 768, 350, 224, 35, 55, preflight=True, note="rate/bw 0.64"),
    _mw2("mw2-grow", "converge", 768, 128, 320, 30, 80, note="hot set beyond the fill"),
    _mw2(
        "mw2-storage",
        "storage",
        512,
        200,
        64,
        8,
        70,
        preflight=True,
        disk=256,
        disk_fill=128,
        disk_rate=2,
        note="NBD disk copy first, then memory",
    ),
]

#: Third set (``mw3-*``), same recording as ``mw2``: more guests for the resident-memory
#: and pre-flight evidence, every one with pre-flight lines, and two that never converge.
MW3_SET: list[Scenario] = [
    _mw2("mw3-idle-half", "idle", 1024, 512, 512, 0, 70, preflight=True, note="idle, half filled"),
    _mw2(
        "mw3-conv-small", "converge", 384, 200, 64, 8, 35, preflight=True, note="small, slow link"
    ),
    _mw2("mw3-conv-wide", "converge", 1024, 600, 384, 20, 100, preflight=True, note="wide hot set"),
    _mw2("mw3-conv-fast", "converge", 768, 500, 96, 25, 150, preflight=True, note="fast link"),
    _mw2("mw3-hard", "converge", 640, 400, 192, 30, 45, preflight=True, note="rate/bw 0.67"),
    _mw2("mw3-lowfill", "converge", 1152, 200, 160, 12, 90, preflight=True, note="17 % filled"),
    _mw2(
        "mw3-nc",
        "nonconverge-abort",
        640,
        450,
        256,
        120,
        50,
        preflight=True,
        actions=(Action(25, "abort"),),
        note="never converges; aborted",
    ),
]


def _mw4(
    label: str, kind: str, mem: int, fill: int, ws: int, rate: int, bw: int, **kw: Any
) -> Scenario:
    return _sc(
        label,
        kind,
        mem,
        fill,
        ws,
        rate,
        bw,
        name="rss4",
        preflight=True,
        periods=MW4_PERIODS_S,
        **kw,
    )


#: The agent's default pre-flight ladder (``AgentConfig.preflight_periods_s``): 8 and 16 s
#: see a hot set saturate that 4 s cannot, on the time scale of a pass 1.
MW4_PERIODS_S = (1, 2, 4, 8, 16)

#: Fourth set (``mw4-*``): what the libvirt agent measures in practice before a migration,
#: the pre-flight ladder 1-16 s and the source QEMU's resident memory, on every trace.
#: Hot sets from ~5 to ~25 seconds of dirtying, so some saturate within 4 s, some within
#: 16 s, some not at all; rate/bandwidth from 0 to ~0.7; one disk copy; one that never
#: converges.
MW4_SET: list[Scenario] = [
    _mw4("mw4-a", "converge", 768, 450, 160, 20, 60, note="hot set = 8 s of dirtying"),
    _mw4("mw4-b", "converge", 1024, 600, 256, 30, 90, note="hot set = 8.5 s"),
    _mw4("mw4-c", "converge", 640, 400, 96, 15, 50, note="hot set = 6.4 s"),
    _mw4("mw4-d", "converge", 896, 500, 320, 25, 70, note="hot set = 12.8 s"),
    _mw4("mw4-e", "converge", 1152, 700, 192, 40, 110, note="hot set = 4.8 s"),
    _mw4("mw4-hard1", "converge", 768, 420, 240, 35, 55, note="rate/bw 0.64"),
    _mw4("mw4-hard2", "converge", 1024, 640, 300, 45, 65, note="rate/bw 0.69"),
    _mw4("mw4-slow", "converge", 512, 300, 200, 8, 25, note="hot set = 25 s: never saturates"),
    _mw4("mw4-lowfill", "converge", 1024, 250, 128, 20, 80, note="24 % filled"),
    _mw4("mw4-wide", "converge", 896, 600, 480, 30, 100, note="hot set = 16 s"),
    _mw4("mw4-trickle", "converge", 640, 450, 64, 4, 40, note="4 MiB/s over 64 MiB"),
    _mw4("mw4-fast", "converge", 1152, 800, 128, 60, 160, note="fast writer, fast link"),
    _mw4("mw4-idle", "idle", 640, 400, 400, 0, 50, note="idle"),
    _mw4(
        "mw4-storage",
        "storage",
        512,
        250,
        96,
        10,
        60,
        disk=256,
        disk_fill=128,
        disk_rate=2,
        note="NBD disk copy first, then memory",
    ),
    _mw4(
        "mw4-nc",
        "nonconverge-abort",
        768,
        500,
        256,
        110,
        45,
        actions=(Action(25, "abort"),),
        note="never converges; aborted",
    ),
]

#: Fifth set (``mw5-*``), recorded like ``mw4``: larger guests (up to 2 GiB) and faster
#: links, and hot sets too wide for the 16 s period to see saturate.
MW5_SET: list[Scenario] = [
    _mw4("mw5-big", "converge", 2048, 1200, 256, 30, 150, note="2 GiB, fast link"),
    _mw4("mw5-big-slow", "converge", 1536, 900, 384, 20, 60, note="hot set = 19 s"),
    _mw4("mw5-tiny", "converge", 384, 250, 32, 10, 30, note="small hot set, slow link"),
    _mw4("mw5-mid1", "converge", 896, 600, 200, 50, 100, note="rate/bw 0.5"),
    _mw4("mw5-mid2", "converge", 1024, 700, 512, 15, 70, note="hot set = 34 s"),
    _mw4("mw5-low", "converge", 768, 200, 100, 12, 50, note="26 % filled"),
    _mw4("mw5-hard", "converge", 896, 550, 256, 50, 75, note="rate/bw 0.67"),
    _mw4("mw5-fastlink", "converge", 1536, 1000, 192, 80, 200, note="fast writer, 200 MiB/s"),
    _mw4("mw5-idle", "idle", 1536, 1100, 1100, 0, 90, note="idle, 1.5 GiB"),
    _mw4(
        "mw5-storage",
        "storage",
        640,
        350,
        128,
        15,
        80,
        disk=384,
        disk_fill=192,
        disk_rate=3,
        note="NBD disk copy first, then memory",
    ),
    _mw4(
        "mw5-nc",
        "nonconverge-abort",
        640,
        400,
        300,
        90,
        35,
        actions=(Action(25, "abort"),),
        note="never converges; aborted",
    ),
]

#: Auto-converge (``ac-*``), recorded like ``mw4``: guests that dirty faster than the link,
#: which QEMU throttles (20 % of their CPU, then +10 % every two passes that still dirty
#: more than half of what they sent) until pre-copy converges. No action is taken.
AC_SET: list[Scenario] = [
    _mw4(
        "ac-fast",
        "auto-converge",
        768,
        500,
        256,
        110,
        50,
        auto_converge=True,
        note="rate/bw 2.2, auto-converge",
    ),
    _mw4(
        "ac-close",
        "auto-converge",
        640,
        400,
        200,
        55,
        50,
        auto_converge=True,
        note="rate/bw 1.1, auto-converge",
    ),
    _mw4(
        "ac-wide",
        "auto-converge",
        1024,
        700,
        512,
        80,
        60,
        auto_converge=True,
        timeout_s=300,
        note="wide hot set, rate/bw 1.3, auto-converge",
    ),
    # The dirtier asked for more than TCG can give writes flat out: CPU-bound, so the
    # throttle slows it in proportion (QEMU's assumption), unlike the paced writers above.
    _mw4(
        "ac-cpu",
        "auto-converge",
        768,
        500,
        256,
        4000,
        50,
        auto_converge=True,
        timeout_s=300,
        note="CPU-bound writer, auto-converge",
    ),
    _mw4(
        "ac-easy",
        "auto-converge",
        640,
        400,
        128,
        20,
        60,
        auto_converge=True,
        note="converges without throttling; auto-converge on",
    ),
]


def _rp(
    label: str,
    kind: str,
    mem: int,
    workload: str,
    wmb: int,
    cache: int,
    wopt: str,
    bw: int,
    **kw: object,
) -> Scenario:
    """A real-program guest (lab/guest/workload.sh), recorded like ``mw4``: the 1-16 s
    pre-flight ladder and the memstats line on every trace. The guest is named after
    the label, so two recorders can share the lab."""
    timeout_s = float(kw.pop("timeout_s", 150.0))  # type: ignore[arg-type]
    guest = WorkloadSpec(
        name=label,
        mem_mib=mem,
        workload=workload,
        wmb=wmb,
        cache_mib=cache,
        wopt=wopt,
        fill_mib=0,
        ws_mib=0,
    )
    postcopy_bw = kw.pop("postcopy_bw", None)
    actions: tuple[Action, ...] = kw.pop("actions", ())  # type: ignore[assignment]
    migration = MigrationSpec(
        name=label,
        bandwidth_mib_s=bw,
        postcopy=bool(kw.pop("postcopy", False)),
        postcopy_bandwidth_mib_s=postcopy_bw,  # type: ignore[arg-type]
        auto_converge=bool(kw.pop("auto_converge", False)),
        actions=actions,
    )
    note = str(kw.pop("note", ""))
    assert not kw, kw
    return Scenario(
        label=label,
        scenario=kind,
        guest=guest,
        migration=migration,
        preflight=True,
        preflight_periods_s=MW4_PERIODS_S,
        note=note,
        timeout_s=timeout_s,
        settle_s=3.0,
        boot_timeout_s=480.0,
    )


_ABORT = (Action(45, "abort"),)
_AC = 320.0  # auto-converge runs: timeout

#: Real programs (``rp-*``): guests 1-4 GiB running programs from Debian packages
#: (lab/guest/workload.sh: redis + redis-benchmark, sqlite3, xz/zstd/gzip, coreutils sort,
#: stress-ng --vm, and page-cache-only guests), each with a page cache full of non-zero
#: data as a long-running guest has. Bandwidths chosen so that some converge easily, some
#: hard, some never (aborted at 45 s), some with auto-converge, some post-copy. The kind
#: is the plan; the trace's result says what happened. Held-out split: ``RP_HELDOUT``.
RP_SET: list[Scenario] = [
    _rp(
        "rp-cache-idle-2g",
        "idle",
        2048,
        "cache",
        0,
        1400,
        "0",
        100,
        note="page cache 1.4 GiB, idle",
    ),
    _rp(
        "rp-redis-easy",
        "converge",
        1024,
        "redis",
        256,
        256,
        "1024",
        120,
        note="redis 1 KiB values, fast link",
    ),
    _rp(
        "rp-stress-nc1",
        "nonconverge-abort",
        1024,
        "stress",
        256,
        256,
        "write64",
        60,
        actions=_ABORT,
        note="stress-ng 256M write64 flat out; aborted",
    ),
    _rp(
        "rp-sqlite-easy",
        "converge",
        1024,
        "sqlite",
        128,
        384,
        "",
        120,
        note="sqlite write-heavy, fast link",
    ),
    _rp(
        "rp-zstd-easy",
        "converge",
        1536,
        "compress",
        256,
        512,
        "zstd",
        150,
        note="zstd -3 over 256 MiB",
    ),
    _rp(
        "rp-ac-stress",
        "auto-converge",
        1024,
        "stress",
        256,
        256,
        "write64",
        60,
        auto_converge=True,
        timeout_s=_AC,
        note="stress-ng flat out, auto-converge",
    ),
    _rp(
        "rp-sort-easy",
        "converge",
        1024,
        "sort",
        128,
        256,
        "64",
        120,
        note="sort -S 64M over 128 MiB",
    ),
    _rp(
        "rp-redis32-hard",
        "converge-hard",
        1536,
        "redis",
        384,
        512,
        "32768",
        40,
        note="redis 32 KiB values, slow link",
    ),
    _rp(
        "rp-pc-stress",
        "postcopy",
        1024,
        "stress",
        256,
        256,
        "write64",
        60,
        postcopy=True,
        postcopy_bw=30,
        actions=(Action(15, "postcopy"),),
        note="post-copy at 15 s",
    ),
    _rp(
        "rp-cache-lowfill",
        "idle",
        1536,
        "cache",
        0,
        200,
        "0",
        60,
        note="mostly empty 1.5 GiB guest",
    ),
    _rp("rp-xz-easy", "converge", 1024, "compress", 128, 256, "xz", 80, note="xz -6"),
    _rp(
        "rp-stress-32m",
        "converge-hard",
        1024,
        "stress",
        32,
        512,
        "write64",
        150,
        note="32 MiB hot set flat out: within the 300 ms downtime at 150 MiB/s",
    ),
    _rp(
        "rp-sqlite-hard",
        "converge-hard",
        1024,
        "sqlite",
        256,
        256,
        "",
        12,
        note="sqlite, slow link",
    ),
    _rp(
        "rp-cache-trickle",
        "converge",
        2048,
        "cache",
        0,
        1200,
        "4",
        80,
        note="1.2 GiB page cache, 4 MiB/s rewritten",
    ),
    _rp(
        "rp-ac-redis32",
        "auto-converge",
        1536,
        "redis",
        384,
        384,
        "32768",
        20,
        auto_converge=True,
        timeout_s=_AC,
        note="redis 32 KiB values, auto-converge",
    ),
    _rp(
        "rp-sort-hard",
        "converge-hard",
        2048,
        "sort",
        256,
        768,
        "128",
        30,
        note="sort -S 128M, slow link",
    ),
    _rp(
        "rp-stress-nc2",
        "nonconverge-abort",
        2048,
        "stress",
        512,
        512,
        "flip",
        100,
        actions=_ABORT,
        note="stress-ng 512M flip; aborted",
    ),
    _rp("rp-gzip-mid", "converge", 2048, "compress", 384, 1024, "gzip", 100, note="gzip -6"),
    _rp(
        "rp-big-redis-4g",
        "converge",
        4096,
        "redis",
        768,
        2048,
        "16384",
        200,
        note="4 GiB, redis 16 KiB values",
    ),
    _rp(
        "rp-zstd-hard",
        "converge-hard",
        1024,
        "compress",
        256,
        256,
        "zstd",
        25,
        note="zstd, slow link",
    ),
    _rp(
        "rp-pc-redis32",
        "postcopy",
        1536,
        "redis",
        384,
        512,
        "32768",
        30,
        postcopy=True,
        actions=(Action(20, "postcopy"),),
        note="post-copy at 20 s, no post-copy limit",
    ),
    _rp(
        "rp-cache-rewrite",
        "converge-hard",
        2048,
        "cache",
        0,
        1200,
        "24",
        35,
        note="1.2 GiB page cache, 24 MiB/s rewritten",
    ),
    _rp("rp-redis-mid", "converge", 2048, "redis", 512, 768, "4096", 50, note="redis 4 KiB values"),
    _rp(
        "rp-stress-nc3",
        "nonconverge-abort",
        1536,
        "stress",
        128,
        768,
        "incdec",
        40,
        actions=_ABORT,
        note="stress-ng 128M incdec; aborted",
    ),
    _rp("rp-sqlite-mid", "converge", 1536, "sqlite", 256, 768, "", 40, note="sqlite"),
    _rp(
        "rp-ac-sort",
        "auto-converge",
        1024,
        "sort",
        256,
        256,
        "128",
        15,
        auto_converge=True,
        timeout_s=_AC,
        note="sort, slow link, auto-converge",
    ),
    _rp(
        "rp-big-cache-3g",
        "converge",
        3072,
        "cache",
        0,
        2400,
        "2",
        150,
        note="3 GiB, 2.4 GiB page cache, 2 MiB/s rewritten",
    ),
    _rp(
        "rp-redis32-nc",
        "nonconverge-abort",
        1024,
        "redis",
        256,
        128,
        "65536",
        10,
        actions=(Action(90, "abort"),),
        note="redis 64 KiB values at 10 MiB/s; aborted at 90 s",
    ),
    _rp("rp-sort-mid", "converge", 1024, "sort", 192, 128, "96", 60, note="sort -S 96M"),
    _rp(
        "rp-ac-stress-big",
        "auto-converge",
        2048,
        "stress",
        512,
        768,
        "write64",
        100,
        auto_converge=True,
        timeout_s=_AC,
        note="stress-ng 512M, auto-converge",
    ),
    _rp("rp-xz-2g", "converge", 2048, "compress", 256, 1024, "xz", 50, note="xz -6, 2 GiB"),
    _rp(
        "rp-pc-sort",
        "postcopy",
        1024,
        "sort",
        256,
        256,
        "128",
        25,
        postcopy=True,
        postcopy_bw=25,
        actions=(Action(15, "postcopy"),),
        note="post-copy at 15 s",
    ),
    _rp(
        "rp-stress-48m",
        "converge-hard",
        1536,
        "stress",
        48,
        768,
        "write64",
        130,
        note="48 MiB hot set flat out at 130 MiB/s (39 MiB in 300 ms)",
    ),
    _rp("rp-sort-3g", "converge", 3072, "sort", 256, 1536, "128", 150, note="3 GiB sort"),
    _rp(
        "rp-redis-slow",
        "converge-hard",
        1024,
        "redis",
        256,
        256,
        "4096",
        15,
        note="redis 4 KiB values, slow link",
    ),
    _rp(
        "rp-cache-lowfill-4g",
        "idle",
        4096,
        "cache",
        0,
        512,
        "1",
        120,
        note="mostly empty 4 GiB guest",
    ),
    _rp(
        "rp-ac-sqlite",
        "auto-converge",
        1024,
        "sqlite",
        256,
        256,
        "",
        10,
        auto_converge=True,
        timeout_s=_AC,
        note="sqlite, 10 MiB/s, auto-converge",
    ),
    _rp(
        "rp-gzip-slow",
        "converge-hard",
        1024,
        "compress",
        256,
        128,
        "gzip",
        20,
        note="gzip, slow link",
    ),
    _rp(
        "rp-pc-stress-big",
        "postcopy",
        2048,
        "stress",
        512,
        1024,
        "write64",
        100,
        postcopy=True,
        actions=(Action(20, "postcopy"),),
        note="post-copy at 20 s",
    ),
    _rp(
        "rp-zstd-4g",
        "converge",
        4096,
        "compress",
        512,
        2560,
        "zstd",
        200,
        note="4 GiB, zstd, 2.5 GiB page cache",
    ),
    _rp(
        "rp-stress-nc4",
        "nonconverge-abort",
        1024,
        "stress",
        384,
        128,
        "write64",
        120,
        actions=_ABORT,
        note="stress-ng 384M at 120 MiB/s; aborted",
    ),
    _rp("rp-sqlite-3g", "converge", 3072, "sqlite", 384, 1536, "", 120, note="3 GiB sqlite"),
    _rp(
        "rp-ac-easy-zstd",
        "auto-converge",
        1024,
        "compress",
        128,
        256,
        "zstd",
        100,
        auto_converge=True,
        timeout_s=_AC,
        note="converges without throttling; AC on",
    ),
    _rp("rp-redis-2g", "converge", 2048, "redis", 768, 512, "8192", 70, note="redis 8 KiB values"),
    _rp("rp-cache-idle-1g", "idle", 1024, "cache", 0, 700, "0", 40, note="idle, slow link"),
    _rp(
        "rp-stress-64m-incdec",
        "converge-hard",
        1024,
        "stress",
        64,
        256,
        "incdec",
        120,
        note="stress-ng 64M incdec",
    ),
    _rp(
        "rp-sqlite-2g-slow",
        "converge-hard",
        2048,
        "sqlite",
        384,
        1024,
        "",
        30,
        note="sqlite 2 GiB, slow link",
    ),
    _rp(
        "rp-pc-zstd",
        "postcopy",
        1536,
        "compress",
        256,
        768,
        "zstd",
        30,
        postcopy=True,
        postcopy_bw=30,
        actions=(Action(25, "postcopy"),),
        note="post-copy at 25 s",
    ),
    # Second batch, appended after the first 48 were recorded (same split rule, applied
    # before these were recorded): more that never converge, hard ones and auto-converge.
    _rp(
        "rp-sort-nc",
        "nonconverge-abort",
        2048,
        "sort",
        384,
        512,
        "192",
        25,
        actions=_ABORT,
        note="sort -S 192M at 25 MiB/s; aborted",
    ),
    _rp(
        "rp-xz-nc",
        "nonconverge-abort",
        1536,
        "compress",
        256,
        512,
        "xz",
        20,
        actions=(Action(60, "abort"),),
        note="xz at 20 MiB/s; aborted at 60 s",
    ),
    _rp(
        "rp-redis64-hard",
        "converge-hard",
        2048,
        "redis",
        512,
        768,
        "65536",
        60,
        note="redis 64 KiB values",
    ),
    _rp(
        "rp-stress-40m",
        "converge-hard",
        1024,
        "stress",
        40,
        256,
        "write64",
        140,
        note="40 MiB hot set flat out at 140 MiB/s (42 MiB in 300 ms)",
    ),
    _rp(
        "rp-ac-zstd",
        "auto-converge",
        1536,
        "compress",
        256,
        512,
        "zstd",
        20,
        auto_converge=True,
        timeout_s=_AC,
        note="zstd at 20 MiB/s, auto-converge",
    ),
    _rp(
        "rp-ac-redis64",
        "auto-converge",
        1024,
        "redis",
        256,
        256,
        "65536",
        30,
        auto_converge=True,
        timeout_s=_AC,
        note="redis 64 KiB values, auto-converge",
    ),
    _rp(
        "rp-pc-sqlite",
        "postcopy",
        1536,
        "sqlite",
        256,
        512,
        "",
        20,
        postcopy=True,
        postcopy_bw=20,
        actions=(Action(20, "postcopy"),),
        note="post-copy at 20 s",
    ),
    _rp(
        "rp-cache-idle-3g",
        "idle",
        3072,
        "cache",
        0,
        2000,
        "0",
        60,
        note="3 GiB, 2 GiB page cache, idle",
    ),
]


def _heldout(scenarios: list[Scenario]) -> frozenset[str]:
    """Within each planned kind, in list order, the 2nd, 5th, 8th, ... scenario."""
    seen: dict[str, int] = {}
    out = set()
    for s in scenarios:
        k = seen.get(s.scenario, 0)
        seen[s.scenario] = k + 1
        if k % 3 == 1:
            out.add(s.label)
    return frozenset(out)


#: The held-out split of ``rp``, fixed before anything was recorded: within each planned
#: kind (converge, converge-hard, nonconverge-abort, auto-converge, postcopy, idle), in
#: RP_SET's order, every third scenario starting with the second. Never look at these
#: traces' estimator scores while tuning; report them apart (bench/traces/rp/SPLIT.md).
RP_HELDOUT: frozenset[str] = _heldout(RP_SET)

#: The sets ``python -m lab.record set --set`` knows.
SETS: dict[str, list[Scenario]] = {
    "standard": STANDARD_SET,
    "mw2": MW2_SET,
    "mw3": MW3_SET,
    "mw4": MW4_SET,
    "mw5": MW5_SET,
    "ac": AC_SET,
    "rp": RP_SET,
}
