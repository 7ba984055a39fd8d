"""The test suite's own set-up: tested version ranges, an explicit asyncio loop scope, Collections for parametrize.

What a newer pytest or plugin will refuse must fail here first, with a message saying what to change.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_test_requirement_has_a_tested_range_the_installed_version_is_in() -> None:
    for line in PYPROJECT["project"]["optional-dependencies"]["test"]:
        requirement = Requirement(line)
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators and "<" in operators, f"{line}: give a lower and an upper bound"
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed} is outside {line}"


def test_asyncio_fixture_loop_scope_is_set_explicitly() -> None:
    assert PYPROJECT["tool"]["pytest"]["ini_options"]["asyncio_default_fixture_loop_scope"] == "function"


def test_a_generator_given_to_parametrize_stops_collection_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "test_generated.py").write_text(
        "import pytest\n\n\ndef cases():\n    yield 1\n\n\n@pytest.mark.parametrize('n', cases())\ndef test_n(n):\n    assert n\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-q", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "parametrize('n') got a generator, not a Collection" in result.stdout
