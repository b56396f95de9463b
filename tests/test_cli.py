"""``rivetkit serve TARGET``: target loading and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from rivetkit.cli import load_target

ROOT = Path(__file__).resolve().parents[1]


def test_file_target_with_default_attr() -> None:
    registry = load_target(str(ROOT / "examples" / "counter.py"))
    assert sorted(registry.definitions) == ["counter"]


def test_module_target_with_attr() -> None:
    registry = load_target("examples.todos:registry")
    assert sorted(registry.definitions) == ["todoList"]


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        ("examples/nope.py", "no such file"),
        ("examples.counter:missing", "has no attribute 'missing'"),
        ("examples.counter:counter", "not a rivetkit registry"),
        ("no_such_module_xyz", "cannot import module"),
    ],
)
def test_bad_targets(target: str, pattern: str) -> None:
    with pytest.raises(click.BadParameter, match=pattern):
        load_target(target)


def test_cli_reports_bad_target_and_exits_non_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rivetkit", "serve", "examples/nope.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr
