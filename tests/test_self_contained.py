"""A clone stands on its own: nothing in the repository reads a path outside it.

The project's reference folder sits beside the checkout on the developers' machines but not
beside a user's clone, so a test, benchmark, script or doc that points there passes for us and
fails (or silently skips) for everyone else.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Spelled in pieces so that this file does not match itself.
_OUTSIDE = re.compile(
    "|".join(
        [
            re.escape("../" + "shared"),  # the reference folder beside the checkout
            re.escape("/work" + "/"),  # the developers' machine layout
            re.escape("parents" + "[2]"),  # a path built from the repository's parent
            re.escape("REPO" + ".parent"),
        ]
    )
)

# Recordings are data, not text to police; everything else that is tracked is read.
_SKIP_SUFFIXES = {".jsonl", ".gz", ".png", ".svg"}


def tracked_files() -> list[Path]:
    """Every file git tracks in this checkout (the suite runs from a clone)."""
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_reads_outside_the_repository() -> None:
    """No tracked file names the reference folder beside the checkout or an absolute
    developer path: tests, benchmarks, scripts and docs use the copies in the repository."""
    offenders = []
    for path in tracked_files():
        if path.suffix in _SKIP_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_the_pattern_catches_what_it_should() -> None:
    """The check is not vacuous: each way of reaching outside is caught."""
    for line in (
        'SHARED = ROOT / ".." / "x" / "../' + 'shared/lab/traces"',
        "see /work" + "/shared/lab/NOTES.md",
        "Path(__file__).resolve().parents" + '[2] / "shared"',
        "(REPO" + '.parent / "shared")',
    ):
        assert _OUTSIDE.search(line), line
    assert not _OUTSIDE.search('REPO / "bench" / "traces" / "shared"')
    assert len(tracked_files()) > 50
