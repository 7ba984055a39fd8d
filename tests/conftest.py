"""Suite-wide collection rules: what pytest will refuse tomorrow is refused here today.

pytest 10 refuses `parametrize` argument values that are not a Collection (a generator runs out after one use).
"""

from __future__ import annotations

from collections.abc import Collection

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for marker in metafunc.definition.iter_markers("parametrize"):
        values = marker.args[1] if len(marker.args) > 1 else marker.kwargs.get("argvalues")
        if values is not None and not isinstance(values, Collection):
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: parametrize({marker.args[0]!r}) got a {type(values).__name__}, not a Collection;"
                " pass a list or tuple (pytest 10 refuses anything else)"
            )
