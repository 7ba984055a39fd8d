"""Shared test helpers: example files, spec builders and a schema defaulter like the API server's.

Kept small; each test module states its own behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from specserve import crd

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


def load_example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def minimal_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
        "speculation": {"method": "ngram"},
    }
    spec.update(overrides)
    return spec


def serving(name: str = "demo", namespace: str = "default", **spec_overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "specserve.dev/v1alpha1",
        "kind": "SpeculativeServing",
        "metadata": {"name": name, "namespace": namespace},
        "spec": minimal_spec(**spec_overrides),
    }


apply_defaults = crd.fill_defaults  # the API server's defaulting, as the CRD generator applies it
