"""The workload knobs the control API changes: synthetic request rate and shape, and content every request shares.

Validated here for PUT /sim/traffic; the --sim-* options (args.py) apply the same ranges at start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Workload:
    """What traffic looks like: synthetic request rate and shape, and the content knobs every request shares."""

    qps: float = 0.0
    temperature: float = 0.7
    acceptance: float | None = None
    echo: float = 0.3
    prompt_tokens: int = 512
    max_tokens: int = 256

    @classmethod
    def from_options(cls, sim: Workload) -> Workload:
        """The workload part of the simulator's options (SimOptions extends Workload)."""
        return cls(**{f.name: getattr(sim, f.name) for f in fields(cls)})

    def changed(self, changes: dict[str, Any]) -> Workload:
        """A copy with some fields changed; ValueError names the first bad one."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        for name, value in changes.items():
            _check_field(name, value)
        return replace(self, **changes)


def _check_field(name: str, value: Any) -> None:
    if name == "acceptance":
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            raise ValueError("acceptance must be null or a number in [0, 1]")
    elif name == "echo":
        if not _is_number(value) or not 0 <= value <= 1:
            raise ValueError("echo must be a number in [0, 1]")
    elif name in ("qps", "temperature"):
        if not _is_number(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0")
    elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
