"""The house rule of issue 11: no module in agent/ or client/ grows past 500 lines.

A module that long is doing more than one job; split it along its seams (see the README's
layout table) rather than raise the limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIMIT = 500


def long_modules(root: Path, limit: int = LIMIT) -> dict[str, int]:
    """Python modules under ``root`` (relative path -> lines) longer than ``limit``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            out[str(path.relative_to(REPO))] = lines
    return out


@pytest.mark.parametrize("package", ["agent", "client"])
def test_no_module_exceeds_the_limit(package: str) -> None:
    """Every module of the package is at most 500 lines."""
    assert long_modules(REPO / package) == {}


def test_the_rule_sees_a_long_module() -> None:
    """The check counts lines and names the offender (so the rule above can fail)."""
    pkg = REPO / "build" / "module-size-probe"
    pkg.mkdir(parents=True, exist_ok=True)
    probe = pkg / "long.py"
    probe.write_text("x = 1\n" * (LIMIT + 1), encoding="utf-8")
    (pkg / "short.py").write_text("x = 1\n" * LIMIT, encoding="utf-8")
    try:
        assert long_modules(pkg) == {"build/module-size-probe/long.py": LIMIT + 1}
    finally:
        probe.unlink()
        (pkg / "short.py").unlink()
