"""Shared test helpers: example files, spec builders and a schema defaulter like the API server's.

Kept small; each test module states its own behaviour.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from specserve import api
from specserve.api import crd
from specserve.rendering import manifests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
FIXTURES = ROOT / "tests" / "fixtures"  # real vLLM /metrics captures and GPU measurements (see its README.md)


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


def claims_and_secrets(obj: dict[str, Any]) -> tuple[set[str], set[str]]:
    """PVCs and Secrets the rendered pods of a serving refer to."""
    spec = api.SpeculativeServingSpec.model_validate(obj["spec"])
    claims, secrets = set(), set()
    for rendered in manifests.render(manifests.Owner(obj["metadata"]["name"], "x"), spec, manifests.DecisionState()):
        pod = rendered["spec"].get("template", {}).get("spec", {})
        claims |= {v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        for container in pod.get("containers", []):
            secrets |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "secretKeyRef" in (e.get("valueFrom") or {})}
    return claims, secrets


apply_defaults = crd.fill_defaults  # the API server's defaulting, as the CRD generator applies it


def mutate(obj: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return obj


BASE = serving(name="demo")
# One object per CEL rule of the CRD (and the valid ones it must let through), shared by unit and e2e tests.
CEL_CASES = {
    "valid ngram": BASE,
    "draft_model without draft": mutate(BASE, ["spec", "speculation"], {"method": "draft_model"}),
    "eagle3 with draft": mutate(BASE, ["spec", "speculation"], {"method": "eagle3", "draft": {"model": "org/head"}}),
    "ngram with draft": mutate(BASE, ["spec", "speculation", "draft"], {"model": "org/d"}),
    "ngram window on another method": mutate(BASE, ["spec", "speculation"], {"method": "suffix", "ngram": {"promptLookupMin": 2}}),
    "ngram window reversed": mutate(BASE, ["spec", "speculation", "ngram"], {"promptLookupMin": 5, "promptLookupMax": 2}),
    "thresholds reversed": mutate(BASE, ["spec", "healthPolicy"], {"disableBelowAcceptance": 0.7, "watchBelowAcceptance": 0.6}),
    "probation above its cap": mutate(BASE, ["spec", "healthPolicy"], {"probationSeconds": 7200, "maxProbationSeconds": 3600}),
    "window shorter than the interval": mutate(BASE, ["spec", "healthPolicy"], {"intervalSeconds": 120, "windowSeconds": 60}),
    "duplicate variants": mutate(BASE, ["spec", "target", "variants"], [{"name": "a", "model": "x/y"}, {"name": "a", "model": "x/z"}]),
    "undeclared active variant": mutate(mutate(BASE, ["spec", "target", "variants"], [{"name": "a", "model": "x/y"}]), ["spec", "target", "activeVariant"], "b"),
    "draft tp mismatch": mutate(mutate(BASE, ["spec", "speculation"], {"method": "draft_model", "draft": {"model": "o/d", "tensorParallelSize": 3}}), ["spec", "gpu"], {"count": 4}),
    "gpu in resources": mutate(BASE, ["spec", "engine"], {"resources": {"requests": {"nvidia.com/gpu": 1}}}),
    "container non-root as root": mutate(BASE, ["spec", "engine", "securityContext"], {"runAsNonRoot": True, "runAsUser": 0}),
    "pod non-root as root": mutate(BASE, ["spec", "engine", "podSecurityContext"], {"runAsNonRoot": True, "runAsUser": 0}),
    "name too long": mutate(BASE, ["metadata", "name"], "x" * 43),
    "name with a dot": mutate(BASE, ["metadata", "name"], "qwen2.5-7b"),
    "name starting with a digit": mutate(BASE, ["metadata", "name"], "7b-chat"),
}
