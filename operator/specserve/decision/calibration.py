"""The GPU calibration of the goodput model: step costs measured on a real GPU, fitted once from the packaged data.

Reads catalog/speculation_costs.yaml (made from tests/fixtures/gpu) the first time it is asked for, then keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

CALIBRATION_FILE = "speculation_costs.yaml"


# A forward pass's time as a share of the reference target's k=0 step: a third is per-layer fixed time (the 8B
# baseline step at batch 1 took 4.64 ms, reading its 14.8 GB of weights at the H200's 4.8 TB/s takes 3.1 ms),
# two thirds scale with the parameters each GPU reads.
LAYER_SHARE = 1 / 3


LAYERS_PER_PARAMETER_EXPONENT = 0.35  # layers when unknown: Llama 1.24, 8.03, 70.55, 405 B have 16, 32, 80, 126; this gives 17, 33, 71, 130


@dataclass(frozen=True)
class ModelSize:
    """What the cost of one forward pass depends on: parameters, layers (estimated when unknown), GPUs sharing it."""

    parameters_billions: float
    layers: int | None = None
    tensor_parallel_size: int = 1

    def cost_index(self) -> float:
        """This model's forward-pass time as a share of the reference target's k=0 step (8B on one H200 = 1)."""
        reference = calibration().reference_target
        layers = self.layers or estimated_layers(self.parameters_billions)
        per_gpu = self.parameters_billions / max(1, self.tensor_parallel_size)
        return LAYER_SHARE * layers / reference.layers + (1 - LAYER_SHARE) * per_gpu / reference.parameters_billions


def estimated_layers(parameters_billions: float) -> int:
    """Layers of a dense model of this size when nothing says: 32 x (params / 7.38 B)^0.35, at least one."""
    reference = calibration().reference_target
    return max(1, round(reference.layers * (parameters_billions / reference.parameters_billions) ** LAYERS_PER_PARAMETER_EXPONENT))


@dataclass(frozen=True)
class CalibrationPoint:
    """One measured load point: its configuration, batch size, accepted length and step cost c over the baseline."""

    config: str
    method: str
    k: int
    acceptance: float
    role: str
    batch_size: int
    accepted_length: float
    step_cost: float
    growth_path: str | None = None

    @property
    def speedup(self) -> float:
        """Baseline TPOT over speculative TPOT, as measured."""
        return self.accepted_length / self.step_cost


@dataclass(frozen=True)
class Calibration:
    """The step-cost model's parameters per measured batch size, derived from the GPU measurements."""

    batch_sizes: tuple[int, ...]
    path_overhead: tuple[float, ...]  # per step, sync proposer paths, in reference-step units
    verification: tuple[float, ...]  # per draft token
    drafting: Mapping[int, tuple[float, ...]]  # k -> one reference draft pass, per pass
    growth: Mapping[str, tuple[float, ...]]  # growth path -> extra cost per accepted token
    reference_target: ModelSize
    reference_draft: ModelSize
    reference_pass_cost: float
    points: tuple[CalibrationPoint, ...] = field(repr=False)
    source: str = ""


@cache
def calibration() -> Calibration:
    """The packaged calibration, read and fitted once."""
    data = yaml.safe_load(resources.files("specserve.catalog").joinpath(CALIBRATION_FILE).read_text())
    return fit_calibration(data)


def fit_calibration(data: Mapping[str, Any]) -> Calibration:
    """Derive the cost model's per-batch-size parameters from measured series (the YAML's layout).

    c = accepted length x TPOT / baseline TPOT. Path overhead O = c - 1 of the look-up that never drafted;
    verification V = (c - 1) / k of the GPU look-up with nothing accepted; a draft pass D = (c - 1 - O - k V) / k
    of the draft with nothing accepted; growth per accepted token: least-squares slope through the origin of
    c - c(acceptance 0) against accepted length - 1, per batch size and path, never below 0.
    """
    sizes = tuple(int(b) for b in data["batchSizes"])
    reference = data["reference"]
    target = ModelSize(float(reference["target"]["parametersBillions"]), int(reference["target"]["layers"]))
    draft = ModelSize(float(reference["draft"]["parametersBillions"]), int(reference["draft"]["layers"]))
    points: list[CalibrationPoint] = []
    for session in data["sessions"]:
        baseline = session["baselineTpotMs"]
        for series in session["series"]:
            for b, (tpot, length), base in zip(sizes, series["points"], baseline, strict=True):
                points.append(CalibrationPoint(
                    config=series["config"], method=series["method"], k=int(series["k"]), acceptance=float(series["acceptance"]),
                    role=series["role"], batch_size=b, accepted_length=float(length), step_cost=float(length) * float(tpot) / float(base),
                    growth_path=series.get("growthPath"),
                ))

    def measured(role: str, b: int, k: int | None = None) -> CalibrationPoint:
        found = [p for p in points if p.role == role and p.batch_size == b and (k is None or p.k == k)]
        if len(found) != 1:
            raise ValueError(f"calibration needs exactly one {role} point at batch size {b}" + (f" and k={k}" if k else ""))
        return found[0]

    overhead = tuple(measured("pathOverhead", b).step_cost - 1 for b in sizes)
    verification = tuple((measured("verification", b).step_cost - 1) / measured("verification", b).k for b in sizes)
    drafting_ks = sorted({p.k for p in points if p.role == "drafting"})
    drafting = {
        k: tuple((measured("drafting", b, k).step_cost - 1 - o - k * v) / k for b, o, v in zip(sizes, overhead, verification))
        for k in drafting_ks
    }

    def zero_acceptance_cost(point: CalibrationPoint) -> float:
        if point.growth_path == "draft":
            return measured("drafting", point.batch_size, point.k).step_cost
        return measured("verification", point.batch_size, point.k).step_cost

    growth: dict[str, tuple[float, ...]] = {}
    for path in sorted({p.growth_path for p in points if p.role == "growth" and p.growth_path}):
        slopes = []
        for b in sizes:
            pairs = [(p.accepted_length - 1, p.step_cost - zero_acceptance_cost(p)) for p in points if p.role == "growth" and p.growth_path == path and p.batch_size == b]
            denominator = sum(x * x for x, _ in pairs)
            slopes.append(max(0.0, sum(x * y for x, y in pairs) / denominator) if denominator else 0.0)
        growth[path] = tuple(slopes)
    ratio = (LAYER_SHARE * draft.layers / target.layers + (1 - LAYER_SHARE) * draft.parameters_billions / target.parameters_billions)
    source = f"vLLM {reference['vllm']} on one {reference['gpu']}, {target.parameters_billions:g}B target, {draft.parameters_billions:g}B draft"
    return Calibration(sizes, overhead, verification, drafting, growth, target, draft, ratio, tuple(points), source)
