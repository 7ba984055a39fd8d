"""Catalogs shipped as data files: GPU products (and, for the planner, model architectures).

Read once from the package's YAML files; lookups are case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class GpuProduct:
    name: str
    memory_gib: float
    gfd_product: str


@cache
def gpu_products() -> dict[str, GpuProduct]:
    text = resources.files(__package__).joinpath("gpus.yaml").read_text()
    return {
        entry["name"].lower(): GpuProduct(entry["name"], float(entry["memoryGiB"]), entry["gfdProduct"])
        for entry in yaml.safe_load(text)
    }


def gpu_product(name: str) -> GpuProduct | None:
    return gpu_products().get(name.lower())
