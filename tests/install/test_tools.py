"""How the install tests treat a missing real tool: a loud failure in CI, a visible skip on a laptop.

Exercised with a tool name that cannot exist.
"""

from __future__ import annotations

import pytest

from tests.install import tools

NO_SUCH_TOOL = "specserve-no-such-tool"


def test_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install-tools.sh"):
        tools.binary(NO_SUCH_TOOL)


def test_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=NO_SUCH_TOOL):
        tools.binary(NO_SUCH_TOOL)


def test_missing_python_package_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="helm-python-sdk"):
        tools.module("specserve_no_such_module", "helm-python-sdk")
