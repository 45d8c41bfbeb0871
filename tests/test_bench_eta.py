"""Tests for the ETA benchmark (bench/eta.py) on the first ten lab recordings
(bench/traces/shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.eta import format_table, main, run

# Copies of the project's first ten recordings (bench/traces/shared/INDEX.md).
SHARED = Path(__file__).resolve().parents[1] / "bench" / "traces" / "shared"


@pytest.fixture(scope="module")
def results() -> tuple[dict[str, object], dict[str, object]]:
    reports, summary = run([SHARED])
    return {r.name: r for r in reports}, summary


def test_nonconverge_flagged_converge_not(
    results: tuple[dict[str, object], dict[str, object]],
) -> None:
    """The aborted non-converging run is flagged within 3 iterations; converge never is."""
    reports, summary = results
    nonconv = reports["nonconverge-abort"]
    conv = reports["converge"]
    assert nonconv.live.flag_iteration is not None  # type: ignore[attr-defined]
    assert nonconv.live.flag_iteration <= 3  # type: ignore[attr-defined]
    assert conv.live.flags == 0  # type: ignore[attr-defined]
    assert summary["false_flags"] == 0


def test_converge_eta_accurate_once_passes_measured(
    results: tuple[dict[str, object], dict[str, object]],
) -> None:
    """On converge the ETA is within 10 % at 50 % and 75 % and its band holds the truth."""
    reports, _ = results
    run_ = reports["converge"].live  # type: ignore[attr-defined]
    assert run_.errors["50%"] is not None and run_.errors["50%"] < 0.10
    assert run_.errors["75%"] is not None and run_.errors["75%"] < 0.10
    assert run_.inside["50%"] and run_.inside["75%"]


def test_preflight_prior_flags_pf_abort_in_first_pass(
    results: tuple[dict[str, object], dict[str, object]],
) -> None:
    """With its pre-flight readings pf-abort is flagged during pass 1; predict() agrees."""
    reports, _ = results
    pf = reports["pf-abort"]
    assert pf.with_prior is not None and pf.with_prior.flag_iteration == 1  # type: ignore[attr-defined]
    assert pf.predict_verdict == "NOT_CONVERGING"  # type: ignore[attr-defined]


def test_table_and_json_output(
    capsys: pytest.CaptureFixture[str], results: tuple[dict[str, object], dict[str, object]]
) -> None:
    """The table states the method and the targets; --json is parseable with a summary."""
    reports, summary = results
    text = format_table(list(reports.values()), summary)  # type: ignore[arg-type]
    assert text.startswith("Method") and "Targets:" in text and "converge" in text
    assert main(["--json", str(SHARED)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"method", "traces", "summary"} <= set(doc)
    assert doc["summary"]["false_flags"] == 0


def test_information_limits_are_reported(
    results: tuple[dict[str, object], dict[str, object]],
) -> None:
    """The hindsight limits say how much error pass 1 leaves whatever the model."""
    reports, summary = results
    limits = summary["limits"]
    assert isinstance(limits, dict)
    share, p90 = limits["pass1_share"], limits["dirty_unknown_p90"]
    assert isinstance(share, float) and 0.0 < share <= 1.0
    assert isinstance(p90, float) and p90 > 0.0
    zero = limits["zero_unknown"]
    assert isinstance(zero, dict) and zero["best_fixed"] <= zero["none"]
    text = format_table(list(reports.values()), summary)  # type: ignore[arg-type]
    assert "Information limits (hindsight" in text


def test_missing_dir_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No traces at all is a user error: exit status 1 and one line on stderr."""
    assert main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench.eta: no *.jsonl traces") and err.count("\n") == 1


def test_splits_are_reported_apart(
    tmp_path: Path, results: tuple[dict[str, object], dict[str, object]]
) -> None:
    """shared/ and rp2/ are held out; in rp/ SPLIT.md's table decides (a trace not in it is
    held out); every split gets its own block, with the naive baseline, in the table."""
    from bench.eta_replay import (
        HELD_OUT_RP,
        HELD_OUT_SHARED,
        TUNING,
        TUNING_RP,
        split_of,
    )

    assert split_of(SHARED / "converge.jsonl") == HELD_OUT_SHARED
    assert split_of(SHARED.parent / "mw4-a.jsonl") == TUNING
    rp = tmp_path / "rp"
    rp.mkdir()
    (rp / "SPLIT.md").write_text(
        "| label | kind | workload | split |\n|---|---|---|---|\n"
        "| rp-a | converge | redis | tuning |\n| rp-b | converge | sqlite | **held-out** |\n"
    )
    assert split_of(rp / "rp-a.jsonl") == TUNING_RP
    assert split_of(rp / "rp-b.jsonl") == HELD_OUT_RP
    assert split_of(rp / "rp-new.jsonl") == HELD_OUT_RP
    assert split_of(SHARED.parent / "rp2" / "rp2-sort-2g.jsonl") == "held-out (rp2)"
    assert split_of(SHARED.parent / "rp3" / "rp3-sort-mid.jsonl") == "held-out (rp3)"
    reports, summary = results
    splits = summary["splits"]
    assert isinstance(splits, dict) and set(splits) == {HELD_OUT_SHARED}
    block = splits[HELD_OUT_SHARED]
    assert {"p90_from_25", "naive_p90_from_25", "coverage_from_25", "max_reversals"} <= set(block)
    text = format_table(list(reports.values()), summary)  # type: ignore[arg-type]
    assert "Splits (" in text and HELD_OUT_SHARED in text
