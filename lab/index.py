"""INDEX.md for a directory of traces: one table row per trace, with the same
columns as bench/traces/shared/INDEX.md, computed from the traces alone. A folder of
real-program traces (meta ``guest.workload``, the ``rp`` set) gets its own header and
columns (workload, page cache, zero pages sent, split from the folder's SPLIT.md).

    python -m lab.index bench/traces
    python -m lab.index bench/traces/rp
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from migwatch.agent.model import MIB

HEADER = """# migwatch lab traces

Real libvirt live migrations A -> B recorded by `lab/record.py` (`make lab-record`): two
libvirt 9.0 daemons on one machine, QEMU 7.2 under TCG, peer-to-peer, `migrate_uri
tcp://127.0.0.1`, guest kernel `pti=on`, sampled every 0.25 s; format in
`TRACE_FORMAT.md` (beside this file). Each meta line records every
parameter (`guest`, `bandwidth_mib_s`, `flag_names`, `params`, `actions`); traces with
`"preflight": true` carry `dirtyrate` lines (page-sampling) taken just before the migrate
call: periods 1, 2 and 4 s as in the shared traces, and 1, 2, 4, 8 and 16 s (the agent's
default ladder, meta `preflight_periods_s`) in the `mw4-*`, `mw5-*` and `ac-*` sets. The scenarios are defined in
`lab/scenarios.py`.

Where they come from: every trace in this folder was recorded by this repository's lab
(`lab/record.py`). The ten in `shared/` (the `shared` set, with their own INDEX.md) are
copies of the project's first recordings, made by an earlier lab with a 1/2/4 s pre-flight
and no resident memory; `make bench-eta` reads both folders. The `rp/` folder (own INDEX.md
and SPLIT.md) holds migrations of guests running real programs (redis, sqlite3, xz/zstd/gzip,
sort, stress-ng, page-cache-only), 1-4 GiB, with a tuning / held-out split fixed before
recording; it is kept apart so that no tool reads its held-out traces by default.

Beyond TRACE_FORMAT.md, the `mw2-*` to `mw5-*` and `ac-*` traces carry one `memstats` line
just before the migrate call (after the pre-flight lines, `dt` null):
`{"type":"memstats","host":"A","stats":{...},"call_ms":...}`, where `stats` is
`virDomainMemoryStats()` of the guest on the source, unchanged (KiB; `rss` is the source QEMU's
resident memory, which bounds the guest RAM ever written). Readers that do not know the line
ignore it, as the format says of unknown keys.

The `qmp-*` traces are bare-QEMU migrations (no libvirt) of the same guest between two
`qemu-system-x86_64 -accel tcg` processes with Proxmox-style `<vmid>.qmp` sockets, recorded by
the agent's own recorder through the QMP backend (`python -m lab.qemuhosts record OUT MEM FILL
WS RATE BANDWIDTH`, lab/qemuhosts.py): `stats` holds `query-migrate` translated into libvirt's
job-stats keys (`agent/backends/qmp/jobs.py`) and, under `qmp`, the reply itself; the
`dirtyrate` lines are `calc-dirty-rate` page-sampling readings (4096 pages per GiB) taken
after boot; `memstats` `rss` is the QEMU process's `VmRSS`; *duration* runs from the
destination's start to the source's `completed` status seen by a 1 s `query-migrate` poll.
`qmp-disk` (`... disk=256`) has a local disk migrated first as Proxmox does (drive-mirror into
the destination's NBD export until ready, then `migrate`): its first samples are the disk
phase, `disk_*` from `query-block-jobs` and `time_elapsed` on the agent's clock from the
mirror's first sight, which QEMU's `total-time` then continues.

Columns as in the shared INDEX.md: *fill* = MiB filled with non-zero data at boot; *hot set* =
MiB rewritten in a sequential sweep at *dirty rate* MiB/s; *disk* = qcow2 copied with the memory
(non-shared storage); *duration* = wall time of the migrate call (includes ~1.2-2.3 s of source
QEMU teardown after the switch-over); *job s* = `time_elapsed` of the completed job;
*iterations*, *final downtime* (actual) and *sent* from the source's JOB_COMPLETED params; for
aborted runs, the last source sample before the abort ("at abort"; the downtime there is QEMU's
expected one). *guest_check*: whether the guest was healthy afterwards on the host it ended on.
*pre-flight 1 / 2 / 4 / 8 / 16 s* = `megabytes_per_second` of the measurements (MiB/s; — where
not taken). *rss* = the `memstats` line's `rss`, MiB.
"""

COLUMNS = [
    "name",
    "RAM MiB",
    "fill MiB (% RAM)",
    "hot set MiB",
    "dirty rate MiB/s",
    "bandwidth MiB/s",
    "disk",
    "action",
    "outcome",
    "duration s (migrate call)",
    "job s (time_elapsed)",
    "iterations",
    "final downtime",
    "sent MiB (data_processed)",
    "guest_check",
    "pre-flight 1 s MiB/s",
    "pre-flight 2 s MiB/s",
    "pre-flight 4 s MiB/s",
    "pre-flight 8 s MiB/s",
    "pre-flight 16 s MiB/s",
    "rss MiB",
]


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _action_text(meta: dict[str, Any], actions: list[dict[str, Any]]) -> str:
    if not actions:
        return "none"
    parts = []
    for a in actions:
        at = f"@{a['dt']:.1f} s"
        if a["action"] == "postcopy":
            pbw = meta["params"].get("bandwidth.postcopy")
            extra = f" (bandwidth.postcopy {pbw} MiB/s)" if pbw else ""
            parts.append(f"post-copy {at}{extra}")
        elif a["action"] == "downtime":
            parts.append(f"max downtime {a['arg']} ms {at}")
        elif a["action"] == "speed":
            parts.append(f"bandwidth → {a['arg']} MiB/s {at}")
        else:
            parts.append(f"{a['action']} {at}" + (f" ({a['arg']})" if a["arg"] else ""))
        if a.get("result") != "ok":
            parts[-1] += f" [{a['result']}]"
    return "; ".join(parts)


def _disk_text(meta: dict[str, Any]) -> str:
    g = meta["guest"]
    if not g.get("disk_mib"):
        return "—"
    return (
        f"{g['disk_mib']} MiB qcow2, {meta.get('disk_fill_mib') or 0} MiB written, "
        f"guest writes {g.get('disk_rate', 0)} MiB/s"
    )


def _last_src_stats_before(lines: list[dict[str, Any]], dt: float) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for line in lines:
        is_src_sample = line["type"] == "stats" and line.get("host") == "A" and "stats" in line
        # the counters of a running (UNBOUNDED, type 2) job sampled before the abort
        if is_src_sample and line["dt"] is not None and line["dt"] <= dt:
            last = line["stats"] if line["stats"].get("type") == 2 else last
    return last


def row(path: Path, workload: bool = False) -> list[str]:
    lines = _load(path)
    meta = next(line for line in lines if line["type"] == "meta")
    result = next(line for line in lines if line["type"] == "result")
    actions = [line for line in lines if line["type"] == "action"]
    rates = {
        line["period_s"]: line["megabytes_per_second"]
        for line in lines
        if line["type"] == "dirtyrate"
    }
    g = meta["guest"]
    fill_pct = 0 if workload else round(100 * g["fill_mib"] / g["mem_mib"])
    done = result["job_completed_event"].get("A") or {}
    check = result["guest_check"]
    if result["outcome"] == "completed" and done:
        job_s = f"{done['time_elapsed'] / 1000:.1f}"
        iterations = str(done["memory_iteration"])
        downtime = f"{done['downtime']} ms"
        sent = f"{done['data_processed'] / MIB:.0f}"
    else:
        abort_dt = next((a["dt"] for a in actions if a["action"] == "abort"), float("inf"))
        last = _last_src_stats_before(lines, abort_dt)
        job_s = "—"
        iterations = f"{last.get('memory_iteration', '?')} at abort"
        downtime = f"— (expected {last.get('downtime', '?')} ms at abort)"
        sent = f"{last.get('data_processed', 0) / MIB:.0f} at abort"
    return [
        path.stem,
        str(g["mem_mib"]),
        "" if workload else f"{g['fill_mib']} ({fill_pct} %)",
        str(g.get("ws_mib", "")),
        str(g.get("rate", "")),
        str(meta["bandwidth_mib_s"]),
        _disk_text(meta),
        _action_text(meta, actions),
        result["outcome"],
        f"{result['duration_s']:.1f}",
        job_s,
        iterations,
        downtime,
        sent,
        f"{'ok' if check['ok'] else 'FAIL'} ({check['host']})",
        *(str(rates.get(p, "—")) for p in (1, 2, 4, 8, 16)),
        _rss_text(lines),
    ]


def _rss_text(lines: list[dict[str, Any]]) -> str:
    rss = next(
        (line.get("stats", {}).get("rss") for line in lines if line["type"] == "memstats"), None
    )
    return "—" if rss is None else f"{rss / 1024:.0f}"


def _first_t(path: Path) -> float:
    with path.open() as fh:
        t: float = json.loads(fh.readline())["t"]
    return t


def render(out_dir: Path) -> str:
    # In recording order (the order of lab/scenarios.py), not alphabetical.
    paths = sorted(out_dir.glob("*.jsonl"), key=_first_t)
    if paths and all(_is_workload(p) for p in paths):
        return render_rp(out_dir, paths)
    rows = [row(p) for p in paths]
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    return (
        f"{HEADER}\n{len(rows)} traces.\n\n<!-- table -->\n"
        + "\n".join(table)
        + "\n<!-- /table -->\n"
    )


RP_HEADER = """# migwatch lab traces: real programs (`{name}-*`)

Real libvirt live migrations A -> B recorded by `python -m lab.record set --set {name}` with the
same lab as the traces one folder up (libvirt 9.0, QEMU 7.2 under TCG, peer-to-peer,
`migrate_uri tcp://127.0.0.1`, guest kernel `pti=on`, sampled every 0.25 s; format in
`../TRACE_FORMAT.md`), but the guests run real programs from Debian packages instead of the
dirtier (`lab/guest/workload.sh`, built by `lab/guest/build.sh rp`): redis-server under
redis-benchmark, sqlite3 running a write-heavy loop, xz/zstd/gzip over a text file, coreutils
sort, stress-ng --vm, and guests with only a page cache. Every guest first fills a tmpfs
(page cache) with non-zero files, as a long-running guest has. No hot set or dirty rate is
known: programs dirty what they dirty, under whatever CPU the shared 2-core machine gave
them (two recorders ran side by side, beside other users' work).

Every trace carries the agent's inputs in practice: the pre-flight ladder (page-sampling
`dirtyrate` lines, periods 1, 2, 4, 8 and 16 s) and one `memstats` line (the source QEMU's
resident memory, `rss`) just before the migrate call. Meta `guest` says `workload`, `wmb`
(MiB of the workload's own data), `cache_mib` (page cache filled at boot) and `wopt` (its
variant); an estimator must not read it.

**Split** (`SPLIT.md`, fixed before recording): *held-out* traces are never looked at while
tuning; report them apart.

Columns: *workload* (variant) and its data MiB; *cache* = MiB of page cache filled at boot;
*zero MiB* = pages QEMU sent as zero pages (`memory_constant` × page size of the completed
job, or at abort); the rest as in `../INDEX.md`.
"""

RP_COLUMNS = [
    "name",
    "split",
    "planned",
    "RAM MiB",
    "workload",
    "data MiB",
    "cache MiB",
    "bandwidth MiB/s",
    "flags",
    "action",
    "outcome",
    "duration s (migrate call)",
    "job s (time_elapsed)",
    "iterations",
    "final downtime",
    "sent MiB (data_processed)",
    "zero MiB",
    "guest_check",
    "pre-flight 1 s MiB/s",
    "pre-flight 2 s MiB/s",
    "pre-flight 4 s MiB/s",
    "pre-flight 8 s MiB/s",
    "pre-flight 16 s MiB/s",
    "rss MiB",
]


def _is_workload(path: Path) -> bool:
    with path.open() as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("type") == "meta":
                return bool(d.get("guest", {}).get("workload"))
    return False


def read_split(out_dir: Path) -> dict[str, str]:
    """label -> "tuning" / "held-out" from the folder's SPLIT.md table, if any."""
    path = out_dir / "SPLIT.md"
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3] in ("tuning", "held-out"):
            out[cells[0]] = cells[3]
    return out


def row_rp(path: Path, split: dict[str, str]) -> list[str]:
    lines = _load(path)
    base = row(path, workload=True)
    meta = next(line for line in lines if line["type"] == "meta")
    result = next(line for line in lines if line["type"] == "result")
    g = meta["guest"]
    done = result["job_completed_event"].get("A") or {}
    if result["outcome"] == "completed" and done:
        zero = done.get("memory_constant", 0) * done.get("memory_page_size", 4096)
    else:
        abort_dt = next(
            (
                line["dt"]
                for line in lines
                if line["type"] == "action" and line["action"] == "abort"
            ),
            float("inf"),
        )
        last = _last_src_stats_before(lines, abort_dt)
        zero = last.get("memory_constant", 0) * last.get("memory_page_size", 4096)
    flags = [
        f.removeprefix("VIR_MIGRATE_").lower().replace("_", "-")
        for f in meta.get("flag_names", [])
        if f in ("VIR_MIGRATE_AUTO_CONVERGE", "VIR_MIGRATE_POSTCOPY")
    ]
    workload = str(g["workload"]) + (f" ({g['wopt']})" if g.get("wopt") else "")
    # base: name, RAM, fill, hot, rate, bw, disk, action, outcome, duration, job, iters,
    # downtime, sent, check, pf x5, rss
    return [
        base[0],
        split.get(base[0], "?"),
        str(meta.get("scenario", "")),
        base[1],
        workload,
        str(g.get("wmb", "")),
        str(g.get("cache_mib", "")),
        base[5],
        ", ".join(flags) or "—",
        *base[7:14],
        f"{zero / MIB:.0f}",
        *base[14:],
    ]


def render_rp(out_dir: Path, paths: list[Path]) -> str:
    split = read_split(out_dir)
    rows = [row_rp(p, split) for p in paths]
    counts = {k: sum(1 for r in rows if r[1] == k) for k in ("tuning", "held-out")}
    table = ["| " + " | ".join(RP_COLUMNS) + " |", "|" + "---|" * len(RP_COLUMNS)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    return (
        f"{RP_HEADER.format(name=out_dir.name)}\n{len(rows)} traces: {counts['tuning']} tuning, "
        f"{counts['held-out']} held-out.\n\n<!-- table -->\n"
        + "\n".join(table)
        + "\n<!-- /table -->\n"
    )


def write_index(out_dir: Path) -> Path:
    path = out_dir / "INDEX.md"
    path.write_text(render(out_dir))
    return path


if __name__ == "__main__":
    print(write_index(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/traces")))
