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
