"""The real-program lab guests (`rp`): their boot parameters, their index and their split.

No libvirt needed: these check what the lab writes, not a migration.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab import guest as guestmod
from lab import index

REPO = Path(__file__).resolve().parents[1]
RP_DIR = REPO / "bench" / "traces" / "rp"


def test_dirtier_guest_cmdline_is_unchanged() -> None:
    """A guest without a workload boots the dirtier with exactly the parameters it always had."""
    spec = guestmod.GuestSpec(name="g", mem_mib=512, fill_mib=256, ws_mib=64, rate=10)
    assert spec.cmdline() == (
        "console=ttyS0 quiet panic=-1 pti=on lab.mb=64 lab.fill=256 lab.rate=10 "
        "lab.report=2 lab.verify=1"
    )
    assert "<initrd>" + str(guestmod.guest_dir() / "initramfs.cpio.gz") in guestmod.domain_xml(spec)


def test_workload_guest_boots_the_rp_initramfs_with_its_workload() -> None:
    """A workload guest names its program on the kernel command line and boots initramfs-rp."""
    spec = guestmod.WorkloadSpec(
        name="g", mem_mib=2048, workload="redis", wmb=256, cache_mib=512, wopt="4096"
    )
    line = spec.cmdline()
    assert "pti=on" in line  # Pitfall 7 applies to every guest
    assert "lab.workload=redis lab.wmb=256 lab.cache=512 lab.wopt=4096" in line
    assert "lab.mb=" not in line
    assert "initramfs-rp.cpio.gz" in guestmod.domain_xml(spec)
    assert spec.trace_dict()["workload"] == "redis"


def test_workload_status_lines_count_as_progress_and_failures() -> None:
    """The workload's ready and status lines are read like the dirtier's; a FAIL is a failure."""
    assert guestmod._READY.search("workload: ready sort cache=256 MiB wmb=128 MiB in 12.5s")
    m = guestmod._WSTATUS.search("workload: t=40.0s kind=redis rounds=3 verify=FAIL")
    assert m is not None and m.group(3) == "FAIL"
    assert guestmod._PANIC.search("workload: FAIL redis-server did not start")


def test_workload_script_parses() -> None:
    """lab/guest/workload.sh is valid POSIX sh (the guest runs it with busybox sh)."""
    proc = subprocess.run(
        ["sh", "-n", str(REPO / "lab" / "guest" / "workload.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_split_file_follows_its_rule() -> None:
    """SPLIT.md holds out, within each planned kind, every third scenario from the second."""
    rows = []
    for line in (RP_DIR / "SPLIT.md").read_text().splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3] in ("tuning", "held-out"):
            rows.append(cells)
    assert len(rows) >= 40
    seen: dict[str, int] = {}
    for label, kind, _workload, split in rows:
        k = seen.get(kind, 0)
        seen[kind] = k + 1
        assert split == ("held-out" if k % 3 == 1 else "tuning"), label
    assert index.read_split(RP_DIR) == {r[0]: r[3] for r in rows}
    held_kinds = {kind for _label, kind, _w, split in rows if split == "held-out"}
    assert held_kinds == set(seen)  # every planned kind has held-out migrations


def test_rp2_is_held_out_whole_and_recorded_as_planned() -> None:
    """rp2/SPLIT.md holds out every scenario of RP2_SET, and every rp2 trace is one of them
    (a scenario that failed to record is missing, never replaced)."""
    from lab.scenarios import RP2_SET

    rp2 = RP_DIR.parent / "rp2"
    split = index.read_split(rp2)
    assert split == {s.label: "held-out" for s in RP2_SET}
    recorded = {p.stem for p in rp2.glob("*.jsonl")}
    assert len(recorded) >= 12 and recorded <= set(split)


def _trace(tmp: Path, label: str) -> Path:
    mib = 1024 * 1024
    lines = [
        {
            "type": "meta",
            "t": 1.0,
            "dt": None,
            "scenario": "converge",
            "label": label,
            "guest": {
                "mem_mib": 1024,
                "workload": "sort",
                "wmb": 128,
                "cache_mib": 256,
                "wopt": "64",
                "name": label,
            },
            "bandwidth_mib_s": 100,
            "params": {},
            "flag_names": ["VIR_MIGRATE_LIVE", "VIR_MIGRATE_AUTO_CONVERGE"],
        },
        {"type": "dirtyrate", "t": 2.0, "dt": None, "period_s": 1, "megabytes_per_second": 30},
        {"type": "memstats", "t": 3.0, "dt": None, "stats": {"rss": 900 * 1024}},
        {
            "type": "result",
            "t": 9.0,
            "dt": 6.0,
            "outcome": "completed",
            "duration_s": 6.0,
            "job_completed_event": {
                "A": {
                    "time_elapsed": 4500,
                    "memory_iteration": 5,
                    "downtime": 30,
                    "data_processed": 700 * mib,
                    "memory_constant": 51200,
                    "memory_page_size": 4096,
                }
            },
            "guest_check": {"ok": True, "host": "B"},
        },
    ]
    path = tmp / f"{label}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_rp_index_shows_workload_zero_pages_and_split(tmp_path: Path) -> None:
    """A folder of real-program traces gets the rp table: workload, zero MiB sent, split."""
    _trace(tmp_path, "rp-x")
    (tmp_path / "SPLIT.md").write_text("| rp-x | converge | sort | **held-out** |\n")
    text = index.render(tmp_path)
    assert "1 traces: 0 tuning, 1 held-out." in text
    row = next(line for line in text.splitlines() if line.startswith("| rp-x "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:9] == [
        "rp-x",
        "held-out",
        "converge",
        "1024",
        "sort (64)",
        "128",
        "256",
        "100",
        "auto-converge",
    ]
    assert cells[index.RP_COLUMNS.index("zero MiB")] == "200"
    assert cells[index.RP_COLUMNS.index("rss MiB")] == "900"
    assert cells[index.RP_COLUMNS.index("job s (time_elapsed)")] == "4.5"
