"""The shipped type stubs match the compiled extension (as pydantic-core checks its own)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest


def test_stubs_and_marker_ship_with_the_package():
    files = resources.files("sidkit")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("_native.pyi").is_file()


def test_stubtest_native():
    pytest.importorskip("mypy")
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "sidkit._native"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_package_type_checks():
    """The package itself passes mypy (the public API's annotations are what users' checkers see)."""
    pytest.importorskip("mypy")
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "python" / "sidkit"
    if not src.is_dir():
        pytest.skip(f"source tree not found at {src}")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", str(src), "--ignore-missing-imports", "--no-incremental"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
