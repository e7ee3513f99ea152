"""The tree stays clean under the ruff configuration in pyproject.toml ([tool.ruff], issue #17)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff_binary() -> str:
    """The ruff executable: the one the `ruff` wheel installed, else one on PATH; skip when neither exists."""
    try:
        from ruff.__main__ import find_ruff_bin
        return str(find_ruff_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff")
        if found is None:
            pytest.skip("ruff is not installed (pip install -e '.[dev]' brings it)")
        return found


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    # --no-cache: no .ruff_cache written into the tree by a test run
    return subprocess.run([ruff_binary(), "check", "--no-cache", "--output-format", "concise", *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True)


def test_tree_is_clean_under_ruff():
    res = ruff(".")
    assert res.returncode == 0, f"ruff check . found problems (rc {res.returncode}):\n{res.stdout}{res.stderr}"


def test_ruff_reads_the_project_config_and_checks_the_runtime():
    # Guards the test above against passing vacuously (a config that excludes the package, or a
    # ruff that reads no config): a probe file inside runtime/ gets both an unused import and a
    # 121-character line flagged.
    probe = "import os\n\nX = " + repr("y" * (121 - len("X = ''"))) + "\n"
    res = ruff("--stdin-filename", "runtime/_lint_probe.py", "-", stdin=probe)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "F401" in res.stdout and "E501" in res.stdout, res.stdout
