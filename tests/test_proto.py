"""The committed stubs match the .proto, and the contract passes buf's STANDARD lint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PROTO = Path("migwatch/v1/migwatch.proto")
GENERATED = ("migwatch_pb2.py", "migwatch_pb2.pyi", "migwatch_pb2_grpc.py", "migwatch_pb2_grpc.pyi")


def _env() -> dict[str, str]:
    # protoc finds protoc-gen-mypy_grpc on PATH, as `make proto` arranges.
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    """Regenerating with `make proto`'s command reproduces the committed stubs byte for byte."""
    out = str(tmp_path)
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-Iproto",
            f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", f"--mypy_grpc_out={out}",
            str(Path("proto") / PROTO),
        ],
        cwd=REPO, env=_env(), check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / PROTO.parent / name).read_bytes()
        committed = (REPO / "proto" / PROTO.parent / name).read_bytes()
        assert fresh == committed, f"proto/{PROTO.parent / name} is stale: run `make proto`"


def test_buf_lint_passes_with_standard_rules(tmp_path: Path) -> None:
    """`buf lint` at the repo root (buf.yaml: STANDARD) reports nothing."""
    assert "STANDARD" in (REPO / "buf.yaml").read_text()
    buf = VENV_BIN / "buf"
    assert buf.exists(), "buf is missing: pip install -e '.[dev]' (buf-bin)"
    result = subprocess.run(
        [str(buf), "lint"],
        check=False,
        cwd=REPO,
        env={**_env(), "BUF_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
