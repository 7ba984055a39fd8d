"""k schedules: vLLM's num_speculative_tokens_per_batch_size ranges, batch-size buckets, and the best schedule an
estimator of speedup gives. Pure: an estimator in, ranges out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from specserve.decision.goodput import Estimate, Estimator, best_k, prior_estimator
from specserve.decision.proposers import Proposer

DEFAULT_BUCKET_STARTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_MAX_RANGES = 3
Range = tuple[int, int, int]



def k_for_batch(ranges: Sequence[Sequence[int]], batch_size: int, cap: int) -> int:
    """vLLM's lookup: the range holding the batch size, else the last range below it; never above cap."""
    k = cap
    for start, end, range_k in sorted(tuple(r) for r in ranges):
        if start > batch_size:
            break
        k = min(cap, range_k)
        if batch_size <= end:
            break
    return k



@dataclass(frozen=True)
class Bucket:
    """Batch sizes lo..hi (hi None: lo and every larger one), judged at one representative batch size."""

    lo: int
    hi: int | None

    @property
    def representative(self) -> float:
        """The geometric middle of the bucket; the open last bucket is judged at its start."""
        return float(self.lo) if self.hi is None else math.sqrt(self.lo * self.hi)

    def __str__(self) -> str:
        return f"{self.lo}+" if self.hi is None else f"{self.lo}-{self.hi}"



def buckets(starts: Sequence[int] = DEFAULT_BUCKET_STARTS, split_after: int | None = None) -> tuple[Bucket, ...]:
    """Buckets from their first batch sizes (the first must be 1); split_after also starts one at split_after + 1."""
    edges = sorted(set(starts) | ({split_after + 1} if split_after is not None else set()))
    if not edges or edges[0] != 1:
        raise ValueError("bucket starts must begin at batch size 1")
    return tuple(Bucket(lo, edges[i + 1] - 1 if i + 1 < len(edges) else None) for i, lo in enumerate(edges))



@dataclass(frozen=True)
class Schedule:
    """A k per batch-size range, in vLLM's num_speculative_tokens_per_batch_size form, with the estimates behind it.

    ranges: [lo, hi, k] covering 1 upwards; the last is written [lo, lo, k] and vLLM carries its k to every larger
    batch. choices: per bucket, the estimate of the k its range ended up with.
    """

    ranges: tuple[Range, ...]
    cap: int
    choices: tuple[tuple[Bucket, Estimate], ...] = ()

    def as_vllm(self) -> list[list[int]]:
        return [list(r) for r in self.ranges]

    def k_for(self, batch_size: int) -> int:
        return k_for_batch(self.ranges, batch_size, self.cap)

    def short(self) -> str:
        """The schedule in a few characters, e.g. 'k4<=8,0' or 'k4<=3,k2<=15,0'."""
        parts = [f"k{k}<={hi}" if k else f"0<={hi}" for _, hi, k in self.ranges[:-1]]
        last_k = self.ranges[-1][2]
        parts.append(f"k{last_k}" if last_k else "0")
        return ",".join(parts)

    def explain(self) -> list[str]:
        return [f"{bucket}: {estimate.explain()}" for bucket, estimate in self.choices]



def build_schedule(
    estimate: Estimator,
    max_k: int,
    *,
    bucket_starts: Sequence[int] = DEFAULT_BUCKET_STARTS,
    disable_above_batch_size: int | None = None,
    max_ranges: int = DEFAULT_MAX_RANGES,
    min_gain: float = 0.0,
    weights: Mapping[int, float] | None = None,
) -> Schedule:
    """The best k per batch-size bucket, merged into at most max_ranges ranges, never above max_k.

    Buckets above disable_above_batch_size get k = 0. Ranges are merged greedily where merging loses the least
    predicted speedup (summed over buckets, weighted by `weights` keyed by bucket start, default 1 each); a merged
    range takes the k with the highest weighted speedup over its buckets among those no bucket predicts slower than k = 0.
    """
    if max_k < 0 or max_ranges < 1:
        raise ValueError("max_k must be >= 0 and max_ranges >= 1")
    table = buckets(bucket_starts, disable_above_batch_size)
    weight = [float((weights or {}).get(bucket.lo, 1.0)) for bucket in table]
    allowed = [0 if disable_above_batch_size is not None and bucket.lo > disable_above_batch_size else max_k for bucket in table]
    estimates = [{k: estimate(bucket.representative, k) for k in range(0, cap + 1)} for bucket, cap in zip(table, allowed)]
    chosen = [best_k(lambda _b, k, e=e: e[k], bucket.representative, cap, min_gain).k for bucket, cap, e in zip(table, allowed, estimates)]

    groups: list[list[int]] = []  # bucket indices per range
    for index, k in enumerate(chosen):
        if groups and chosen[groups[-1][0]] == k:
            groups[-1].append(index)
        else:
            groups.append([index])
    group_k = [chosen[g[0]] for g in groups]

    def merged_k(indices: list[int]) -> tuple[int, float]:
        """The k a merged range takes and the weighted speedup it keeps."""
        cap = min(allowed[i] for i in indices)
        # a k predicted slower than none in any of the buckets is no option: merging never buys a slowdown
        fitting = [k for k in range(0, cap + 1) if k == 0 or all(estimates[i][k].speedup >= 1.0 for i in indices)]
        options = [(sum(weight[i] * estimates[i][k].speedup for i in indices), -k) for k in fitting]
        kept, negative_k = max(options)
        return -negative_k, kept

    while len(groups) > max_ranges:
        best: tuple[float, int, int] | None = None
        for left in range(len(groups) - 1):
            indices = groups[left] + groups[left + 1]
            k, kept = merged_k(indices)
            before = sum(weight[i] * estimates[i][group_k[j]].speedup for j in (left, left + 1) for i in groups[j])
            loss = before - kept
            if best is None or loss < best[0] - 1e-12:
                best = (loss, left, k)
        assert best is not None
        _, left, k = best
        groups[left: left + 2] = [groups[left] + groups[left + 1]]
        group_k[left: left + 2] = [k]
        # neighbours that now share a k become one range
        index = 0
        while index < len(groups) - 1:
            if group_k[index] == group_k[index + 1]:
                groups[index: index + 2] = [groups[index] + groups[index + 1]]
                group_k[index: index + 2] = [group_k[index]]
            else:
                index += 1

    ranges: list[Range] = []
    for position, (indices, k) in enumerate(zip(groups, group_k)):
        lo = table[indices[0]].lo
        hi = table[indices[-1]].hi
        last = position == len(groups) - 1
        ranges.append((lo, lo if last or hi is None else hi, k))
    choices = tuple((table[i], estimates[i][k]) for indices, k in zip(groups, group_k) for i in indices)
    return Schedule(tuple(ranges), max_k, choices)



def prior_schedule(per_position: Sequence[float], proposer: Proposer, max_k: int, **options: Any) -> Schedule:
    """build_schedule on the priors alone: what the GPU measurements say for this acceptance and proposer."""
    return build_schedule(prior_estimator(per_position, proposer), max_k, **options)
