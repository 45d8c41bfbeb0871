"""Benchmark: the cost of the agent's background pre-flight dirty-rate sampling.

Method: on lab host A (``make lab``; run as root) two idle 512 MiB guests are booted; an
agent (``--backend libvirt``) runs 90 s with sampling off (``--preflight-interval 0``),
then 90 s with ``--preflight-interval 10``: back-to-back measurements with the default
ladder (periods 1+2+4+8+16 s) on both guests at once (default ``--preflight-concurrency 4``),
the worst case, since the default is one measurement per guest every 120 s. CPU time of the
agent, of A's libvirtd and of the guests' QEMU comes from /proc/PID/stat.

Run: ``python -m bench.preflight_cost`` (about 3.5 minutes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import hosts
from lab.labctl import Lab

GUESTS = ("cost1", "cost2")
_HZ = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def run(interval_s: float, window_s: float, log_dir: Path) -> None:
    record = hosts.read_record("A")
    assert record is not None, "the lab is not up: make lab"
    log = log_dir / f"agent-{interval_s:g}.log"
    with log.open("w") as out:
        agent = subprocess.Popen(
            [
                sys.executable, "-m", "migwatch.agent", "--backend", "libvirt",
                "--libvirt-uri", Lab.uri("A"), "--listen", "127.0.0.1:0",
                "--log-level", "debug", "--preflight-interval", str(interval_s),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(3)
        qemus = hosts.lab_qemu_pids()
        before = (_cpu_s(agent.pid), _cpu_s(record.pid), sum(map(_cpu_s, qemus)))
        began = time.time()
        time.sleep(window_s)
        elapsed = time.time() - began
        after = (_cpu_s(agent.pid), _cpu_s(record.pid), sum(map(_cpu_s, qemus)))
        agent.terminate()
        agent.wait()
    done = len(re.findall("pre-flight dirty rate of", log.read_text()))
    agent_pct, libvirtd_pct, qemu_pct = (100 * (a - b) / elapsed for a, b in zip(after, before))
    print(
        f"preflight interval {interval_s:g} s: agent {agent_pct:.2f}% of a core, "
        f"libvirtd {libvirtd_pct:.2f}%, {len(qemus)} QEMU {qemu_pct:.2f}%, "
        f"{done} measurements in {elapsed:.0f} s"
    )


def main() -> None:
    print(__doc__.split("Run:")[0].strip(), end="\n\n")
    lab = Lab()
    lab.up()
    for name in GUESTS:
        lab.destroy(name)
        lab.boot_guest(name, mem_mib=512, fill_mib=256, ws_mib=64, rate=10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(0, 90, Path(tmp))
            run(10, 90, Path(tmp))
    finally:
        for name in GUESTS:
            lab.destroy(name)


if __name__ == "__main__":
    main()
