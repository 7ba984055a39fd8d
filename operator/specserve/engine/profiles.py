"""vLLM by version: what each release can do for speculation and what its mechanisms cost, as the decision core
models them. Read from spec.engine.vllmVersion, else from the image tag; an unknown version takes the nearest older.

Costs are shares of a k=0 target step at a batch size, interpolated in log batch size and held beyond the ends.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from functools import lru_cache

VERSION_IN_TAG = re.compile(r":v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+@].*)?$")


@dataclass(frozen=True)
class EngineProfile:
    """One vLLM release's speculation mechanisms and their costs."""

    version: tuple[int, int]
    schedule: bool  # accepts num_speculative_tokens_per_batch_size
    # Any schedule switches the whole server from FULL_AND_PIECEWISE to PIECEWISE CUDA graphs
    # (vllm/config/vllm.py, _maybe_override_dynamic_sd_cudagraph_mode): the extra step cost, by batch size.
    schedule_graph_cost: tuple[tuple[int, float], ...]
    # At k=0 a draft model or head still runs a forward pass per step to keep its KV cache in sync
    # (vllm/v1/spec_decode/llm_base_proposer.py): a k=0 range costs that pass, a look-up nothing.
    drafter_runs_at_k0: bool
    custom_histogram_buckets: bool  # --custom-histogram-buckets exists, so TPOT can be resolved finer than vLLM's buckets
    source: str

    @property
    def name(self) -> str:
        return f"vLLM {self.version[0]}.{self.version[1]}"

    def graph_cost(self, batch_size: float) -> float:
        """What PIECEWISE graphs add to a step at this batch size, as a share of a k=0 step."""
        return _interpolate_log(self.schedule_graph_cost, round(float(batch_size), 3))


# vLLM issue 49548 measured about 14% single-stream cost of PIECEWISE against full graphs (an MTP model); full
# graphs matter less as the batch grows and the step becomes compute-bound. These are the bounds the GPU sweep
# (bench/gpu, tests/fixtures/gpu) replaces with measured numbers for our configurations.
UPSTREAM_GRAPH_COST = ((1, 0.14), (8, 0.08), (32, 0.04), (128, 0.02))

PROFILES: tuple[EngineProfile, ...] = (
    EngineProfile((0, 26), True, UPSTREAM_GRAPH_COST, True, False, "vLLM 0.26 source; graph cost from vLLM issue 49548 until measured"),
    EngineProfile((0, 33), True, UPSTREAM_GRAPH_COST, True, True, "vLLM 0.33 source (same mechanisms as 0.26, adds --custom-histogram-buckets)"),
)


def parse_version(text: str) -> tuple[int, int] | None:
    """'0.33', '0.33.1' or 'v0.33.0' -> (0, 33); None when it is not a version."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def version_of_image(image: str) -> tuple[int, int] | None:
    """The release an image tag names (vllm/vllm-openai:v0.33.0 -> (0, 33)); None for latest, a digest, or a custom tag."""
    match = VERSION_IN_TAG.search(image)
    return (int(match.group(1)), int(match.group(2))) if match else None


def profile_for(version: tuple[int, int] | None) -> EngineProfile:
    """The profile of this release, or of the nearest older one we know; the newest when the version is unknown."""
    if version is None:
        return PROFILES[-1]
    older = [p for p in PROFILES if p.version <= version]
    return older[-1] if older else PROFILES[0]


@lru_cache(maxsize=4096)
def _interpolate_log(points: tuple[tuple[int, float], ...], batch_size: float) -> float:
    xs = [math.log(b) for b, _ in points]
    ys = [value for _, value in points]
    x = math.log(max(1.0, float(batch_size)))
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x) - 1
    share = (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + share * (ys[i + 1] - ys[i])
