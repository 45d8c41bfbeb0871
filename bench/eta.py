"""ETA / band / verdict benchmark over recorded migration traces.

Usage: ``python -m bench.eta [--json] [DIR ...]`` (default: ``bench/traces``,
``bench/traces/rp``, the real-program recordings, and ``bench/traces/shared``, the
project's first ten recordings; the splits are reported apart, ``eta_replay.split_of``).

Every trace is replayed (``bench.eta_replay``) through ``MigrationEstimator`` exactly as the
agent's replay backend and tracker feed it (``estimates``): the source's running samples
in order, the limits in force (bandwidth, max downtime, post-copy flag), whether post-copy
had been started, the
guest's RAM (``memory_size_hint``) and, for the "prior" rows, the pre-flight lines
(``preflight_of``), the source QEMU's resident memory where the trace has a ``memstats``
line (``resident_of``; ``--no-resident`` ignores it), with the agent's ``EstimatorConfig``.
Nothing reads ``meta.guest``.
``tests/test_replay_matches_bench.py`` checks that the agent serves these very ETAs. This
module pools the per-trace scores, checks them against the targets and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import cast

from migwatch.agent.backends.trace import TraceError, find_traces
from migwatch.agent.estimate.estimator import EstimatorConfig

from bench.eta_limits import (
    dirty_unknown,
    pass1_share,
    predict_zero_unknown,
    zero_unknown,
)
from bench.eta_replay import (
    CHECKPOINTS,
    LADDER_MIN_S,
    Run,
    TraceReport,
    agent_estimator_config,
    estimates,
    evaluate,
)

__all__ = ["agent_estimator_config", "estimates", "format_table", "main", "run", "summarize"]

REPO = Path(__file__).resolve().parent.parent
#: The lab's synthetic recordings and the ten shared ones (what bench.evacuation pools).
DEFAULT_DIRS = (REPO / "bench" / "traces", REPO / "bench" / "traces" / "shared")
#: What ``make bench-eta`` scores: those and the real-program recordings (``rp/SPLIT.md``,
#: then the later batches ``rp2/``, ``rp3/``..., each held out whole).
ETA_DIRS = (
    REPO / "bench" / "traces",
    REPO / "bench" / "traces" / "rp",
    *sorted(
        (d for d in (REPO / "bench" / "traces").glob("rp[0-9]*") if d.is_dir()),
        key=lambda d: int(d.name[2:]),
    ),
    REPO / "bench" / "traces" / "shared",
)
TARGET_ERR = 0.10  # p90 ETA error from 25 % elapsed
TARGET_BAND = 0.80  # share of true durations inside the band
TARGET_FLAG_ITERS = 3
TARGET_PREFLIGHT = 0.15

METHOD = """\
Method
  Replay: each trace's source samples (running jobs only) go through MigrationEstimator in
  order with the limits in force (migrate params, speed/downtime actions, post-copy flag)
  and post-copy after a successful `postcopy` action, with the agent's EstimatorConfig
  (budget = the agent's default slow budget), as the agent's replay backend feeds it.
  meta.guest is never read. The guest's RAM size (what virDomainGetInfo tells an agent) is
  taken from the first memory_total in the trace: it only matters during a disk mirror,
  when the memory counters are zero.
  True duration = completed job's time_elapsed (JOB_COMPLETED / completed stats).
  ETA error at x% = |elapsed + eta - true| / true, using the last sample at or before
  x% of the true duration; no ETA there = miss (counted as an infinite error).
  Band: the true remaining time lies in [eta_low, eta_high] at that sample (missing = out).
  Naive baseline: data_remaining / memory_bps (or the disk copy rate before memory starts);
  naive band: none. Naive flag: remaining at an iteration start >= the previous one.
  Flag: first sample with verdict NOT_CONVERGING or STALLED, on aborted migrations (time
  and memory iteration); false flag: any such sample on a migration with no action lines.
  Pre-flight columns: the same replay with the trace's dirtyrate readings as prior, and
  predict() from them before the first sample (memory size from the first sample's
  memory_total, a stand-in for virDomainGetInfo; disk from disk_total; bandwidth from the
  migrate params).
  "After pass 1": every sample once memory_iteration >= 2, i.e. once a dirty rate exists.
  Aggregates pool the self-converging migrations (completed, no action lines); the rest are
  shown per trace. Sub-pools: traces with resident memory (a memstats line), and those that
  also carry a pre-flight ladder reaching >= 8 s (mw4-*, mw5-*): everything the libvirt
  agent measures before a migration (the shared traces have 1/2/4 s and no memstats); the
  targets are scored on all traces and on that pool ("_agent_inputs").
  Targets: p90 err <= 10% from 25%; band >= 80%; flag <= 3 iterations;
  no false flags; pre-flight p90 <= 15%.
  Information limits (hindsight, not estimates): the same checkpoints scored for
  hypothetical estimators that know, from the trace's own later samples, what no agent can
  know at the checkpoint (when pass 1 ends; the zero pages pass 1 has still to walk), to
  show how much error is left by what the job stats do not say."""


def _pct(xs: Sequence[float | None], q: float) -> float | None:
    """Nearest-rank percentile; a miss (None) counts as +inf."""
    vals = sorted(math.inf if x is None else x for x in xs)
    if not vals:
        return None
    k = max(math.ceil(q * len(vals)) - 1, 0)
    return vals[k]


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "miss"
    return f"{x * 100:.0f}%" if pct else f"{x:.1f}"


def summarize(reports: Sequence[TraceReport]) -> dict[str, object]:
    selfc = [r for r in reports if r.self_converging]
    out: dict[str, object] = {"self_converging": [r.name for r in selfc]}

    def pool(runs: Sequence[Run], keys: Sequence[str], naive: bool = False) -> list[float | None]:
        return [(run.naive if naive else run.errors).get(k) for run in runs for k in keys]

    later = [f"{int(f * 100)}%" for f in CHECKPOINTS if f >= 0.25]
    res = [r for r in selfc if r.resident]
    variants: tuple[tuple[str, list[Run]], ...] = (
        ("live", [r.live for r in selfc]),
        ("prior", [r.with_prior for r in selfc if r.with_prior is not None]),
        # The subsets that know the never-written share (resident memory recorded).
        ("resident_live", [r.live for r in res]),
        ("resident_prior", [r.with_prior for r in res if r.with_prior is not None]),
        ("agent_prior", [r.with_prior for r in res if r.with_prior is not None and r.ladder]),
    )
    for label, runs in variants:
        if not runs:
            continue
        block: dict[str, object] = {"traces": len(runs)}
        for frac in CHECKPOINTS:
            k = f"{int(frac * 100)}%"
            block[f"p50@{k}"] = _pct(pool(runs, [k]), 0.5)
            block[f"p90@{k}"] = _pct(pool(runs, [k]), 0.9)
            block[f"naive_p90@{k}"] = _pct(pool(runs, [k], naive=True), 0.9)
        block["p90_after_pass1"] = _pct([a for run in runs for a, _ in run.after_pass1], 0.9)
        block["naive_p90_after_pass1"] = _pct([n for run in runs for _, n in run.after_pass1], 0.9)
        block["p90_from_25"] = _pct(pool(runs, later), 0.9)
        block["naive_p90_from_25"] = _pct(pool(runs, later, naive=True), 0.9)
        inside = [run.inside.get(f"{int(f * 100)}%", False) for run in runs for f in CHECKPOINTS]
        block["band_share"] = sum(inside) / len(inside) if inside else None
        alls = [run.band_share_all for run in runs if run.band_share_all is not None]
        block["band_share_all_samples"] = sum(alls) / len(alls) if alls else None
        out[label] = block
    # Aborted by an operator because they never converged (an auto-converge run cut short
    # by the recorder's timeout says nothing about that: it is reported with its kind).
    aborted = [r for r in reports if r.outcome == "aborted" and not r.auto_converge]
    # Migrations rescued by an action (post-copy, downtime): shown, not scored.
    rescued = [r for r in reports if r.outcome == "completed" and r.intervened]
    out["flag_rescued"] = {
        r.name: {
            "s": r.live.flag_s,
            "iteration": r.live.flag_iteration,
            "action_s": r.first_action_s,
        }
        for r in rescued
    }
    out["flag"] = {
        r.name: {
            "s": r.live.flag_s,
            "iteration": r.live.flag_iteration,
            "prior_s": r.with_prior.flag_s if r.with_prior else None,
            "prior_iteration": (r.with_prior.flag_iteration if r.with_prior else None),
            "naive_s": r.live.naive_flag_s,
            "naive_iteration": r.live.naive_flag_iteration,
        }
        for r in aborted
    }
    clean = [
        r for r in reports if r.outcome == "completed" and not r.intervened and not r.auto_converge
    ]
    # Auto-converge: flagged before QEMU's first throttle shows, and cleared after it?
    out["auto_converge"] = {
        r.name: {
            "flag_iteration": r.live.flag_iteration,
            "flagged_samples": r.live.flags,
            "cleared_by_iteration": r.live.cleared_iteration,
        }
        for r in reports
        if r.auto_converge and r.outcome == "completed"
    }
    out["false_flags"] = sum(1 for r in clean if r.live.flags)
    out["false_flags_prior"] = sum(1 for r in clean if r.with_prior and r.with_prior.flags)
    out["naive_false_flags"] = sum(1 for r in clean if r.live.naive_flags)
    out["clean_traces"] = len(clean)
    pre = [r for r in selfc if r.preflight]
    if pre:
        out["predict_p90"] = _pct([r.predict_err for r in pre], 0.9)
        out["predict_band_share"] = sum(bool(r.predict_inside) for r in pre) / len(pre)
    pre_res = [r for r in pre if r.resident]
    if pre_res:
        out["predict_resident_p90"] = _pct([r.predict_err for r in pre_res], 0.9)
        out["predict_resident_traces"] = len(pre_res)
    pre_agent = [r for r in pre_res if r.ladder]
    if pre_agent:
        out["predict_agent_p90"] = _pct([r.predict_err for r in pre_agent], 0.9)
        out["predict_agent_band_share"] = sum(bool(r.predict_inside) for r in pre_agent) / len(
            pre_agent
        )
        out["predict_agent_traces"] = len(pre_agent)
        plain = [r for r in pre_agent if not r.auto_converge]
        if plain and len(plain) < len(pre_agent):
            # Auto-converge predictions lean on an assumption about how the throttle slows
            # the guest (passmodel.AutoConverge): shown apart as well.
            out["predict_agent_p90_without_auto_converge"] = _pct(
                [r.predict_err for r in plain], 0.9
            )
            out["predict_agent_traces_without_auto_converge"] = len(plain)
    out["limits"] = _limits(selfc, pre)
    splits = split_summary(reports)
    out["splits"] = splits
    targets: dict[str, bool | None] = {}
    # The ETA targets on every trace, with the pre-flight prior, and on the traces that
    # carry all the libvirt agent measures.
    for label, suffix in (("live", ""), ("prior", "_with_prior"), ("agent_prior", "_agent_inputs")):
        found = out.get(label)
        if not isinstance(found, dict):
            continue
        p90, share = found.get("p90_from_25"), found.get("band_share")
        targets[f"eta_p90_from_25_le_10pct{suffix}"] = isinstance(p90, float) and p90 <= TARGET_ERR
        targets[f"band_ge_80pct{suffix}"] = isinstance(share, float) and share >= TARGET_BAND
    targets["flag_within_3_iterations"] = bool(aborted) and all(
        r.live.flag_iteration is not None and r.live.flag_iteration <= TARGET_FLAG_ITERS
        for r in aborted
    )
    targets["no_false_flags"] = out["false_flags"] == 0
    if pre:
        pp = out.get("predict_p90")
        targets["preflight_p90_le_15pct"] = isinstance(pp, float) and pp <= TARGET_PREFLIGHT
    ap = out.get("predict_agent_p90")
    if isinstance(ap, float):
        targets["preflight_p90_le_15pct_agent_inputs"] = ap <= TARGET_PREFLIGHT
    targets.update(split_targets(splits))
    out["targets"] = targets
    return out


def split_targets(splits: Mapping[str, Mapping[str, object]]) -> dict[str, bool | None]:
    """Issue 12's targets on each held-out split (the p90 only on the real-program ones)."""
    out: dict[str, bool | None] = {}
    for split, b in splits.items():
        if not split.startswith("held-out"):
            continue
        tag = split.replace("held-out (", "heldout_").rstrip(")")
        p90, cov = b.get("p90_from_25"), b.get("coverage_from_25")
        if re.fullmatch(r"heldout_rp\d*", tag):
            out[f"{tag}_p90_from_25_le_20pct"] = isinstance(p90, float) and p90 <= 0.20
        out[f"{tag}_coverage_ge_85pct"] = isinstance(cov, float) and cov >= 0.85
        worse = False
        for k in ("50%", "75%"):
            est, naive = b.get(f"p90@{k}"), b.get(f"naive_p90@{k}")
            if isinstance(est, float) and isinstance(naive, float) and est > naive:
                worse = True
        out[f"{tag}_never_worse_than_naive_50_75"] = not worse
        out[f"{tag}_no_false_flags"] = b.get("false_flags") == 0
        rev = b.get("max_reversals")
        out[f"{tag}_reversals_le_3"] = isinstance(rev, int) and rev <= 3
        out[f"{tag}_aborts_flagged"] = b.get("aborted_flagged_before") == b.get("aborted")
    return out


def split_summary(reports: Sequence[TraceReport]) -> dict[str, dict[str, object]]:
    """Per split (``eta_replay.split_of``), the replay as the agent runs it (with the trace's
    pre-flight when it has one) against the naive remaining / rate on the same samples:
    p90 error from 25 % elapsed, band coverage from 25 %, p90 at 50 % and 75 % counting only
    checkpoints after pass 1 (once the migration has spoken), false flags, verdict
    reversals, and whether every aborted migration was flagged before its abort."""
    out: dict[str, dict[str, object]] = {}
    later = [f"{int(f * 100)}%" for f in CHECKPOINTS if f >= 0.25]
    for split in sorted({r.split for r in reports}):
        mine = [r for r in reports if r.split == split]
        selfc = [r for r in mine if r.self_converging]
        runs = [r.agent_run for r in selfc]
        block: dict[str, object] = {"traces": len(mine), "self_converging": len(selfc)}
        block["p90_from_25"] = _pct([run.errors.get(k) for run in runs for k in later], 0.9)
        block["naive_p90_from_25"] = _pct([run.naive.get(k) for run in runs for k in later], 0.9)
        inside = [run.inside.get(k, False) for run in runs for k in later]
        block["coverage_from_25"] = sum(inside) / len(inside) if inside else None
        for k in ("50%", "75%"):
            spoke = [run for run in runs if run.cp_iteration.get(k, 0) >= 2]
            block[f"after_pass1_checkpoints@{k}"] = len(spoke)
            block[f"p90@{k}"] = _pct([run.errors.get(k) for run in spoke], 0.9)
            block[f"naive_p90@{k}"] = _pct([run.naive.get(k) for run in spoke], 0.9)
        clean = [
            r for r in mine if r.outcome == "completed" and not r.intervened and not r.auto_converge
        ]
        block["false_flags"] = sum(1 for r in clean if r.agent_run.flags)
        block["naive_false_flags"] = sum(1 for r in clean if r.live.naive_flags)
        block["max_reversals"] = max((r.agent_run.reversals for r in mine), default=0)
        worst = max(mine, key=lambda r: r.agent_run.reversals, default=None)
        block["max_reversals_trace"] = worst.name if worst is not None else None
        aborted = [r for r in mine if r.outcome == "aborted" and r.abort_s is not None]
        block["aborted"] = len(aborted)
        block["aborted_flagged_before"] = sum(
            1
            for r in aborted
            if r.agent_run.flag_s is not None
            and r.abort_s is not None
            and r.agent_run.flag_s <= r.abort_s
        )
        out[split] = block
    return out


def format_splits(splits: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The per-split table (``split_summary``)."""
    lines = [
        "Splits (the replay as the agent runs it, with the pre-flight where recorded;"  # noqa: ISC004
        " naive = remaining / rate on the same samples):"
    ]
    for split, b in splits.items():

        def f(key: str, block: Mapping[str, object] = b) -> str:
            v = block.get(key)
            return _fmt(v) if isinstance(v, float) else ("-" if v is None else str(v))

        lines.append(
            f"  {split}: {b['traces']} traces, {b['self_converging']} self-converging;"
            f" p90 from 25% {f('p90_from_25')} (naive {f('naive_p90_from_25')});"
            f" coverage from 25% {f('coverage_from_25')}"
        )
        lines.append(
            f"    after pass 1: p90@50% {f('p90@50%')} (naive {f('naive_p90@50%')},"
            f" {b['after_pass1_checkpoints@50%']} checkpoints); p90@75% {f('p90@75%')}"
            f" (naive {f('naive_p90@75%')}, {b['after_pass1_checkpoints@75%']} checkpoints)"
        )
        lines.append(
            f"    false flags {b['false_flags']} (naive {b['naive_false_flags']}); max verdict"
            f" reversals per migration {b['max_reversals']} ({b['max_reversals_trace']});"
            f" aborted flagged before the abort {b['aborted_flagged_before']}/{b['aborted']}"
        )
    return lines


def _limits(selfc: Sequence[TraceReport], pre: Sequence[TraceReport]) -> dict[str, object]:
    """The information limits (eta_limits) on the two pools and for predict()."""
    live = [cp for r in selfc for cp in r.hindsight]
    prior = [cp for r in selfc if r.preflight for cp in r.hindsight]
    out: dict[str, object] = {}
    if live:
        p90, c = dirty_unknown(live)
        out["pass1_share"] = pass1_share(live)
        out["prior_pass1_share"] = pass1_share(prior) if prior else None
        out["dirty_unknown_p90"] = p90
        out["dirty_unknown_best_multiple"] = c
        out["zero_unknown"] = zero_unknown(live)
    if prior:
        out["zero_unknown_prior"] = zero_unknown(prior)
    first = [r.hindsight[0] for r in pre if r.hindsight]
    if first:
        out["predict_zero_unknown"] = predict_zero_unknown(first)
    return out


def _format_limits(limits: Mapping[str, object]) -> list[str]:
    zl, zp, pz = (
        limits.get(k) for k in ("zero_unknown", "zero_unknown_prior", "predict_zero_unknown")
    )
    if not isinstance(zl, dict):
        return []
    share = limits.get("pass1_share")
    p90 = limits.get("dirty_unknown_p90")
    c = limits.get("dirty_unknown_best_multiple")
    lines = ["Information limits (hindsight; what the job stats do not say at the checkpoint):"]
    if isinstance(share, float):
        pshare = limits.get("prior_pass1_share")
        lines.append(
            f"  checkpoints from 25% still in pass 1 or the disk mirror: {_fmt(share)}"
            + (f" ({_fmt(pshare)} of the prior pool)" if isinstance(pshare, float) else "")
        )
    if isinstance(p90, float) and isinstance(c, float):
        lines.append(
            f"  dirty rate unknown in pass 1 (pass-1 end known exactly, time after it"
            f" = best multiple {c:.2f} of pass 1): p90 {_fmt(p90)}"
        )

    def zero(label: str, z: Mapping[str, float]) -> str:
        return (
            f"  zero pages ahead unknown, all else exact ({label}): share seen so far"
            f" p90 {_fmt(z['seen_share'])}, none p90 {_fmt(z['none'])}, best fixed"
            f" never-written share {z['best_fixed_share']:.0%} of RAM p90"
            f" {_fmt(z['best_fixed'])}"
        )

    lines.append(zero("no pre-flight pool", zl))
    if isinstance(zp, dict):
        lines.append(zero("pre-flight pool", zp))
    if isinstance(pz, dict):
        lines.append(
            f"  predict(), zero pages unknown, all else exact: none p90 {_fmt(pz['none'])},"
            f" best fixed share {pz['best_fixed_share']:.0%} p90"
            f" {_fmt(pz['best_fixed'])}"
        )
    return lines


def format_table(reports: Sequence[TraceReport], summary: Mapping[str, object]) -> str:
    lines = [METHOD, ""]
    cps = [f"{int(f * 100)}%" for f in CHECKPOINTS]
    head = (
        f"{'trace':<20} {'outcome':<10} {'true s':>6}  "
        + "  ".join(f"{c:>11}" for c in cps)
        + "  band@cp  band/all  flag(s,it)  naiveflag"
    )
    lines.append("ETA error per checkpoint: estimator / naive   (prior rows: with pre-flight)")
    lines.append(head)
    lines.append("-" * len(head))
    for r in reports:
        variants: list[tuple[str, Run]] = [("", r.live)]
        if r.with_prior is not None:
            variants.append((" +prior", r.with_prior))
        for suffix, run in variants:
            cells = "  ".join(
                f"{_fmt(run.errors.get(c)):>5}/{_fmt(run.naive.get(c)):<5}" for c in cps
            )
            if r.true_s is None:
                cells = "  ".join(f"{'-':>11}" for _ in cps)
            inside = sum(run.inside.get(c, False) for c in cps)
            band = f"{inside}/{len(cps)}" if r.true_s is not None else "-"
            allb = _fmt(run.band_share_all) if r.true_s is not None else "-"
            flag = f"{run.flag_s:.1f},{run.flag_iteration}" if run.flag_s is not None else "-"
            nflag = (
                f"{run.naive_flag_s:.1f},{run.naive_flag_iteration}"
                if run.naive_flag_s is not None
                else "-"
            )
            tag = r.outcome + ("*" if r.intervened else "")
            true = f"{r.true_s:.1f}" if r.true_s is not None else "-"
            lines.append(
                f"{(r.name + suffix)[:20]:<20} {tag:<10} {true:>6}  {cells}  "
                f"{band:>7}  {allb:>8}  {flag:>10}  {nflag:>9}"
            )
    lines.append("(* = an action was applied: excluded from the ETA aggregates)")
    lines.append("")
    names = {
        "live": "without pre-flight",
        "prior": "with pre-flight prior",
        "resident_live": "recorded with resident memory, without pre-flight",
        "resident_prior": "recorded with resident memory, with pre-flight prior",
        "agent_prior": (
            "with all the libvirt agent measures before a migration (resident"
            f" memory, pre-flight periods up to >= {LADDER_MIN_S:.0f} s)"
        ),
    }
    for label, name in names.items():
        block = summary.get(label)
        if not isinstance(block, dict):
            continue
        lines.append(f"Self-converging migrations, {name} ({block['traces']} traces):")
        row = "  ".join(
            f"{c}: p50 {_fmt(block[f'p50@{c}'])} p90 {_fmt(block[f'p90@{c}'])}"
            f" (naive p90 {_fmt(block[f'naive_p90@{c}'])})"
            for c in cps
        )
        lines.append("  " + row)
        lines.append(
            f"  p90 from 25%: {_fmt(block['p90_from_25'])}"
            f" (naive {_fmt(block['naive_p90_from_25'])});"
            f" band holds the truth at {_fmt(block['band_share'])} of checkpoints,"
            f" {_fmt(block['band_share_all_samples'])} of all samples"
        )
        lines.append(
            f"  every sample after pass 1 (dirty rate measured): p90"
            f" {_fmt(block['p90_after_pass1'])}"
            f" (naive {_fmt(block['naive_p90_after_pass1'])})"
        )
    flags = summary.get("flag")
    if isinstance(flags, dict):
        for name, f in flags.items():
            lines.append(
                f"Non-convergence flag, {name}: {_fmt(f['s'], False)} s at iteration"
                f" {f['iteration']} (with prior: {_fmt(f['prior_s'], False)} s, it"
                f" {f['prior_iteration']}; naive: {_fmt(f['naive_s'], False)} s, it"
                f" {f['naive_iteration']})"
            )
    rescued = summary.get("flag_rescued")
    if isinstance(rescued, dict):
        for name, f in rescued.items():
            lines.append(
                f"  (rescued by an action at {_fmt(f['action_s'], False)} s) {name}: flagged at"
                f" {_fmt(f['s'], False)} s, iteration {f['iteration']}"
            )
    ac = summary.get("auto_converge")
    if isinstance(ac, dict):
        for name, f in ac.items():
            lines.append(
                f"Auto-converge, {name}: flagged from pass {f['flag_iteration']}"
                f" ({f['flagged_samples']} samples), cleared from pass"
                f" {f['cleared_by_iteration']} (libvirt reports QEMU's throttle only once it"
                " has throttled)"
                if f["flag_iteration"] is not None
                else f"Auto-converge, {name}: never flagged"
            )
    lines.append(
        f"False flags on {summary['clean_traces']} migrations without intervention:"
        f" {summary['false_flags']} (with prior {summary['false_flags_prior']};"
        f" naive {summary['naive_false_flags']})"
    )
    pre = [r for r in reports if r.preflight]
    if pre:
        lines.append("Pre-flight predict():")
        for r in pre:
            true = f"{r.true_s:.1f}" if r.true_s is not None else "-"
            eta = _fmt(r.predict_eta_s, False) if r.predict_eta_s is not None else "none"
            lines.append(
                f"  {r.name:<18} true {true:>5}  predicted {eta:>6}"
                f"  err {_fmt(r.predict_err):>5}  in band {r.predict_inside}"
                f"  verdict {r.predict_verdict}"
            )
        p90, share = summary.get("predict_p90"), summary.get("predict_band_share")
        if isinstance(p90, float) and isinstance(share, float):
            lines.append(
                f"  p90 error on self-converging: {_fmt(p90)}; band coverage {_fmt(share)}"
            )
        rp90 = summary.get("predict_resident_p90")
        if isinstance(rp90, float):
            lines.append(
                f"  p90 error on the {summary.get('predict_resident_traces')} of them"
                f" recorded with resident memory: {_fmt(rp90)}"
            )
        ap90 = summary.get("predict_agent_p90")
        if isinstance(ap90, float):
            lines.append(
                f"  p90 error on the {summary.get('predict_agent_traces')} with all the"
                f" agent measures (resident memory, periods >= {LADDER_MIN_S:.0f} s):"
                f" {_fmt(ap90)}; band coverage"
                f" {_fmt(cast('float | None', summary.get('predict_agent_band_share')))}"
            )
            np90 = summary.get("predict_agent_p90_without_auto_converge")
            if isinstance(np90, float):
                lines.append(
                    f"    the {summary.get('predict_agent_traces_without_auto_converge')}"
                    f" of them without auto-converge: {_fmt(np90)}"
                )
    limits = summary.get("limits")
    if isinstance(limits, dict):
        lines.extend(_format_limits(limits))
    splits = summary.get("splits")
    if isinstance(splits, dict):
        lines.append("")
        lines.extend(format_splits(splits))
    lines.append("")
    targets = summary.get("targets")
    if isinstance(targets, dict):
        lines.append(
            "Targets: " + ", ".join(f"{k} {'MET' if v else 'MISSED'}" for k, v in targets.items())
        )
    return "\n".join(lines)


def _jsonable(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def run(
    dirs: Sequence[str | Path], config: EstimatorConfig | None = None, use_resident: bool = True
) -> tuple[list[TraceReport], dict[str, object]]:
    """Evaluate every trace in ``dirs``; returns the per-trace reports and the summary."""
    cfg = config or agent_estimator_config()
    reports = [evaluate(p, cfg, use_resident) for p in find_traces(*dirs)]
    return reports, summarize(reports)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eta", description=__doc__)
    parser.add_argument("dirs", nargs="*", help="trace directories")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--no-resident",
        action="store_true",
        help="ignore the traces' memstats lines (resident memory unknown)",
    )
    args = parser.parse_args(argv)
    dirs = args.dirs or [str(d) for d in ETA_DIRS]
    try:
        reports, summary = run(dirs, use_resident=not args.no_resident)
    except (TraceError, OSError) as exc:
        print(f"bench.eta: {exc}", file=sys.stderr)
        return 1
    if not reports:
        print(f"bench.eta: no *.jsonl traces in {', '.join(map(str, dirs))}", file=sys.stderr)
        return 1
    if args.json:
        doc = {"method": METHOD, "traces": [asdict(r) for r in reports], "summary": summary}
        print(json.dumps(_jsonable(doc), indent=2, default=str))
    else:
        print(format_table(reports, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
