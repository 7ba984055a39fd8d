"""What the goodput policy knows of speedup: a window measured against the baseline, verdicts learned per batch-size
bucket with the step cost fitted to them, and the estimator and plan built from both over the GPU priors.

Pure: plain data in and out. Evidence, strongest first: measured (this window), learned (an earlier window at the
same k in the same bucket, decayed with age), fitted (another k or bucket, from the step cost those windows fitted,
with the spread such fits showed on the GPU), prior (the GPU calibration alone). A plan changes the configuration only
when even the pessimistic end of its prediction (at the stated confidence) beats what is in force.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

from specserve.decision import configurations, fitting, goodput, schedules
from specserve.decision.proposers import Proposer

COMPARABLE_BATCH_RATIO = 2.0  # speculative and baseline replicas whose batch sizes differ more are not compared
VERDICT_WEIGHT = 0.3  # weight of a new window in a bucket's verdict (moving average)
FORGET_BELOW = 0.05  # a verdict whose decayed weight falls below this is forgotten
UNSEEN_WEIGHT = 0.01  # weight of a bucket no measured window fell in, when ranges are merged
WINDOW_NOISE = 0.05  # relative spread of one window's speedup beside its sampling noise (load and content drift)
REQUEST_SPREAD = 0.5  # coefficient of variation of per-request TPOT, for the sampling noise of a median of n requests
Bounds = Sequence[float]  # a histogram's bucket upper bounds, increasing


UNRESOLVED_WITHIN = 0.02  # two quantiles of one bucket closer than this (relative) are read as unresolved


def unresolved(a: float, b: float, bounds: Bounds) -> bool:
    """Whether two quantiles of one histogram cannot be compared. Inside a bucket a quantile is interpolated from
    ranks alone: two distributions wholly inside one bucket read the same value whatever their latencies (vLLM's
    first TPOT bucket ends at 10 ms: a P50 there reads 5 ms, a P99 9.9 ms; in the 10-25 ms bucket both read 17.5).
    So both in the first bucket, or both in one bucket at (nearly) the same value, is no measurement."""
    bucket = bisect.bisect_left(bounds, a)
    if bucket != bisect.bisect_left(bounds, b):
        return False
    return bucket == 0 or abs(a - b) <= UNRESOLVED_WITHIN * max(a, b)

Range = schedules.Range


@dataclass(frozen=True)
class Measurement:
    """One window against the baseline: speedup = the weaker of the median gain and the tail allowance."""

    batch_size: float | None
    k: int
    speedup: float
    median: float  # baseline P50 TPOT / speculative P50 TPOT
    tail: float | None  # baseline P99 / speculative P99 (TPOT or TTFT, the worse), times the allowed ratio
    uncertainty: float = WINDOW_NOISE  # relative 1-sigma of the speedup

    def explain(self) -> str:
        at = f" at batch {self.batch_size:.1f}" if self.batch_size is not None else ""
        tail = f", tail allowance {self.tail:.2f}x" if self.tail is not None and self.tail < self.median else ""
        return f"measured {self.speedup:.2f}x \u00b1{self.uncertainty:.0%} with k={self.k}{at} (median {self.median:.2f}x against the baseline{tail})"


def measure(
    k: int,
    p50: float | None, baseline_p50: float | None,
    batch_size: float | None, baseline_batch_size: float | None,
    tails: Sequence[tuple[float | None, float | None, Bounds, float]], tpot_bounds: Bounds, requests: float | None = None,
) -> Measurement | None:
    """The speedup this window measured, or None when the baseline is missing, not comparable, or the two medians
    are unresolved by the TPOT histogram.

    tails: (speculative P99, baseline P99, histogram bounds, allowed ratio); a tail worse than the baseline's by more
    than its allowed ratio makes the speedup fall below 1 whatever the median says. Unresolved quantiles are not
    compared.
    """
    if not p50 or not baseline_p50 or p50 <= 0 or baseline_p50 <= 0 or unresolved(p50, baseline_p50, tpot_bounds):
        return None
    if batch_size is not None and baseline_batch_size is not None:
        low, high = sorted((max(batch_size, 1e-9), max(baseline_batch_size, 1e-9)))
        if high / low > COMPARABLE_BATCH_RATIO:
            return None
    median = baseline_p50 / p50
    allowances = [base / p99 * ratio for p99, base, bounds, ratio in tails if p99 and base and p99 > 0 and base > 0 and not unresolved(p99, base, bounds)]
    tail = min(allowances) if allowances else None
    sampling = REQUEST_SPREAD * math.sqrt(math.pi / 2) / math.sqrt(requests) if requests else 0.0  # a median's standard error
    return Measurement(batch_size, k, min(median, tail) if tail is not None else median, median, tail, math.hypot(WINDOW_NOISE, sampling))


@dataclass(frozen=True)
class Verdict:
    """What was measured in one batch-size bucket: speedup at k, and its ratio to the prior (the correction)."""

    lo: int
    hi: int | None
    k: int
    speedup: float
    correction: float  # measured speedup / the prior's at the same k, batch size and acceptance
    at: float  # time of the newest window
    windows: float  # measured windows, each decayed by its age
    cost_scale: float | None = None  # the step cost fitted to these windows, as a share of the prior's extra cost

    def weight(self, now: float, half_life: float) -> float:
        return self.windows * 0.5 ** (max(0.0, now - self.at) / half_life)

    def bucket(self) -> schedules.Bucket:
        return schedules.Bucket(self.lo, self.hi)


def bucket_of(table: Sequence[schedules.Bucket], batch_size: float) -> schedules.Bucket:
    for bucket in table:
        if bucket.hi is None or batch_size <= bucket.hi:
            return bucket
    return table[-1]


def remembered(verdicts: Sequence[Verdict], now: float, half_life: float) -> tuple[Verdict, ...]:
    """The verdicts still worth keeping, decayed to now; the rest are forgotten."""
    return tuple(v for v in verdicts if v.weight(now, half_life) >= FORGET_BELOW)


def learn(
    verdicts: Sequence[Verdict], table: Sequence[schedules.Bucket], measurement: Measurement, prior: float, now: float, half_life: float,
    found: fitting.Fit | None = None,
) -> tuple[Verdict, ...]:
    """The verdicts with this window's measurement (and the cost fitted to it) folded into its bucket (k > 0 and a
    known batch size only)."""
    if measurement.k <= 0 or measurement.batch_size is None or prior <= 0:
        return tuple(verdicts)
    bucket = bucket_of(table, measurement.batch_size)
    correction = measurement.speedup / prior
    scale = found.cost_scale if found is not None else None
    old = next((v for v in verdicts if v.lo == bucket.lo), None)
    if old is None or old.k != measurement.k:
        new = Verdict(bucket.lo, bucket.hi, measurement.k, measurement.speedup, correction, now, 1.0, scale)
    else:
        blend = lambda a, b: (1 - VERDICT_WEIGHT) * a + VERDICT_WEIGHT * b  # noqa: E731
        blended = blend(old.cost_scale, scale) if old.cost_scale is not None and scale is not None else scale
        new = replace(old, speedup=blend(old.speedup, measurement.speedup), correction=blend(old.correction, correction), at=now,
                      windows=old.weight(now, half_life) + 1.0, cost_scale=blended)
    rest = [v for v in verdicts if v.lo != bucket.lo]
    return tuple(sorted([*rest, new], key=lambda v: v.lo))


def estimator(
    verdicts: Sequence[Verdict], table: Sequence[schedules.Bucket], prior: goodput.Estimator, measured_bucket: int | None,
    per_position: Sequence[float] | None = None, proposer: Proposer | None = None, measured: tuple[int, float, float] | None = None,
) -> goodput.Estimator:
    """S(b, k) from b's bucket verdict, or the nearest bucket's (ties go to the larger batch, where speculation pays
    less): from the step cost fitted to it where it has one (and the acceptance and proposer are given), else the
    prior times its correction; the prior alone when nothing was measured. `measured` (k, speedup, spread) is this
    window's own, which is what the measured bucket gives at that k."""
    index = {bucket.lo: i for i, bucket in enumerate(table)}

    known = [v for v in verdicts if v.lo in index]
    nearest = {
        bucket.lo: min(known, key=lambda v: (abs(index[v.lo] - index[bucket.lo]), -v.lo)) if known else None for bucket in table
    }

    fits = {
        v.lo: fitting.Fit(v.cost_scale, v.k, v.bucket().representative, WINDOW_NOISE / math.sqrt(max(1.0, v.windows)))
        for v in known if v.cost_scale is not None and per_position is not None and proposer is not None
    }

    def source(batch_size: float) -> Verdict | None:
        return nearest[bucket_of(table, batch_size).lo]

    def estimate(batch_size: float, k: int) -> goodput.Estimate:
        base = prior(batch_size, k)
        verdict = source(batch_size)
        if k == 0 or verdict is None:
            return base.revised(base.speedup, uncertainty=0.0) if k == 0 else base
        own = verdict.lo == bucket_of(table, batch_size).lo
        if own and measured is not None and verdict.lo == measured_bucket and k == measured[0]:
            return base.revised(measured[1], "measured", f"this window against the baseline (prior {base.speedup:.2f}x)", measured[2])
        found = fits.get(verdict.lo)
        if found is not None:
            fitted = fitting.from_prior(found, base)
            if fitted.evidence == "learned" and verdict.lo == measured_bucket:
                fitted = fitted.revised(fitted.speedup, "measured")
            return fitted
        evidence: goodput.Evidence = "measured" if own and verdict.lo == measured_bucket else "learned"
        where = "" if own else f", correction of bucket {verdict.bucket()}"
        basis = f"prior {base.speedup:.2f}x x correction {verdict.correction:.2f} (measured {verdict.speedup:.2f}x at k={verdict.k}{where})"
        return base.revised(base.speedup * verdict.correction, evidence, basis)

    return estimate


@dataclass(frozen=True)
class Plan:
    """The configuration the evidence recommends, against the one in force, and the predicted gain with its doubt."""

    schedule: schedules.Schedule
    current: tuple[Range, ...]
    gain: float  # predicted weighted speedup of the schedule over the current configuration, minus 1
    evidence: goodput.Evidence  # the weakest evidence behind the recommendation where load carries weight
    lines: tuple[str, ...]  # per weighted bucket: current and recommended estimates
    gain_low: float = 0.0  # the gain at the pessimistic end of the prediction (its confidence bound)
    confidence: float = 0.9
    hypothesis: schedules.Schedule | None = None  # the best configuration by the point estimates, when not the current: worth a trial
    hypothesis_gain: float = 0.0

    @property
    def changes(self) -> bool:
        return not same_ranges(self.schedule.ranges, self.current, self.schedule.cap)

    @property
    def all_off(self) -> bool:
        return all(k == 0 for _, _, k in self.schedule.ranges)

    @property
    def certain(self) -> bool:
        """Whether even the pessimistic end of the prediction is a gain: only then is it a reason to change."""
        return self.gain_low > 0

    def explain(self) -> str:
        target = "off" if self.all_off else self.schedule.short()
        doubt = f", at least {self.gain_low:+.0%} at {self.confidence:.0%} confidence" if self.gain_low != self.gain else ""
        return f"{short(self.current)} -> {target}, predicted {self.gain:+.0%}{doubt} [{self.evidence}]: " + "; ".join(self.lines)


def plan(
    estimate: goodput.Estimator, current: Sequence[Range], max_k: int, weights: Mapping[int, float],
    disable_above_batch_size: int | None, bucket_starts: Sequence[int] = schedules.DEFAULT_BUCKET_STARTS,
    costs: configurations.Costs | None = None, confidence: float = 0.9,
) -> Plan:
    """The best configuration for these estimates - speculation off, one k, or a schedule - chosen by the pessimistic
    end of each prediction, and what it is predicted to gain over `current` where load was seen.

    Without `costs` every configuration is costed as its k alone (no engine mechanisms), as before the profiles."""
    table = schedules.buckets(bucket_starts, disable_above_batch_size)
    z = z_of(confidence)
    full = {bucket.lo: weights.get(bucket.lo, UNSEEN_WEIGHT) for bucket in table}
    seen = [(bucket, weights.get(bucket.lo, 0.0)) for bucket in table if weights.get(bucket.lo, 0.0) > 0]
    # one plan asks for the same (batch size, k) many times over: each is estimated once
    estimate = functools.cache(estimate)
    cautious = functools.cache(lambda b, k: _pessimistic(estimate(b, k), z))
    in_schedule = functools.cache(configurations.schedule_estimator(cautious, costs)) if costs is not None else cautious
    best_schedule = schedules.build_schedule(in_schedule, max_k, bucket_starts=bucket_starts, disable_above_batch_size=disable_above_batch_size, weights=full)
    point_schedule = schedules.build_schedule(
        configurations.schedule_estimator(estimate, costs) if costs is not None else estimate, max_k,
        bucket_starts=bucket_starts, disable_above_batch_size=disable_above_batch_size, weights=full,
    )
    candidates = [tuple(tuple(r) for r in current), best_schedule.ranges, point_schedule.ranges, configurations.OFF]
    if disable_above_batch_size is None:
        candidates += [((1, 1, k),) for k in range(1, max_k + 1)]

    def under(ranges: Sequence[Range], bucket: schedules.Bucket) -> goodput.Estimate:
        b = bucket.representative
        if costs is None:
            return estimate(b, schedules.k_for_batch(ranges, int(b), max_k)) if ranges else estimate(b, 0)
        return configurations.speedup_under(ranges, b, estimate, costs, max_k)

    def total(ranges: Sequence[Range], pessimistic: bool) -> float:
        return sum(w * (_pessimistic(under(ranges, bucket), z) if pessimistic else under(ranges, bucket)).speedup for bucket, w in seen)

    now_total = total(current, False)
    ties_keep_current = lambda ranges: (ranges == candidates[0], -len(ranges))  # noqa: E731
    chosen = max(candidates, key=lambda ranges: (round(total(ranges, True), 9), *ties_keep_current(ranges)))
    guess = max(candidates, key=lambda ranges: (round(total(ranges, False), 9), *ties_keep_current(ranges)))
    if chosen == configurations.OFF:
        chosen = ((1, 1, 0),)
    lines: list[str] = []
    weakest: goodput.Evidence = "measured"
    for bucket, _ in seen:
        before, after = under(current, bucket), under(chosen if chosen != ((1, 1, 0),) else configurations.OFF, bucket)
        for evidence in (before.evidence, after.evidence):
            if goodput.EVIDENCE_ORDER.index(evidence) > goodput.EVIDENCE_ORDER.index(weakest):
                weakest = evidence
        doubt = f" \u00b1{after.uncertainty:.0%}" if after.uncertainty else ""
        lines.append(f"b {bucket}: k={before.k} {before.speedup:.2f}x -> k={after.k} {after.speedup:.2f}x{doubt} [{after.evidence if after.k else 'measured'}]")
    off = chosen == ((1, 1, 0),)
    new_total = total(configurations.OFF if off else chosen, False)
    low_total = total(configurations.OFF if off else chosen, True)
    gain = new_total / now_total - 1 if now_total > 0 else 0.0
    gain_low = low_total / now_total - 1 if now_total > 0 else 0.0
    schedule = best_schedule if chosen == best_schedule.ranges else schedules.Schedule(tuple(chosen), max_k)
    hypothesis, hypothesis_gain = None, 0.0
    if guess != candidates[0] and guess != configurations.OFF and now_total > 0:
        hypothesis, hypothesis_gain = schedules.Schedule(tuple(guess), max_k), total(guess, False) / now_total - 1
    return Plan(schedule, tuple(tuple(r) for r in current), gain, weakest, tuple(lines), gain_low, confidence, hypothesis, hypothesis_gain)  # type: ignore[arg-type]


def _pessimistic(estimate: goodput.Estimate, z: float) -> goodput.Estimate:
    """The estimate at the low end of its spread; one without a stated spread (a prior) takes the prior's."""
    spread = estimate.uncertainty if estimate.uncertainty is not None else fitting.PRIOR_SPREAD
    if estimate.k == 0 and estimate.uncertainty is None:
        spread = 0.0
    return estimate.revised(estimate.speedup * max(0.0, 1.0 - z * spread))


def z_of(confidence: float) -> float:
    """The standard normal quantile of a one-sided confidence (0.9 -> 1.28)."""
    return NormalDist().inv_cdf(min(max(confidence, 0.5), 0.999))


def spec_ranges(max_k: int, disable_above_batch_size: int | None) -> tuple[Range, ...]:
    """What the spec alone renders: k for every batch, or k up to the cut-off and 0 above."""
    if disable_above_batch_size is None:
        return ((1, 1, max_k),)
    return ((1, disable_above_batch_size, max_k), (disable_above_batch_size + 1, disable_above_batch_size + 1, 0))


def same_ranges(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], cap: int) -> bool:
    """Whether two schedules give the same k at every batch size."""
    points = {1} | {int(x) for r in (*a, *b) for x in (r[0], r[1], r[1] + 1)}
    return all(schedules.k_for_batch(a, p, cap) == schedules.k_for_batch(b, p, cap) for p in points)


def short(ranges: Sequence[Sequence[int]]) -> str:
    return schedules.Schedule(tuple(tuple(r) for r in ranges), max((r[2] for r in ranges), default=0)).short()  # type: ignore[misc]


def clamp(ranges: Sequence[Sequence[int]], max_k: int, disable_above_batch_size: int | None) -> tuple[Range, ...]:
    """A schedule within the spec's bounds: no k above max_k, 0 above the cut-off (spec is the upper bound)."""
    cut = disable_above_batch_size
    starts = sorted({int(r[0]) for r in ranges} | {1} | ({cut + 1} if cut is not None else set()))

    def k_at(batch: int) -> int:
        return 0 if cut is not None and batch > cut else schedules.k_for_batch(ranges, batch, max_k)

    return canonical([(lo, k_at(lo)) for lo in starts])


def canonical(steps: Sequence[tuple[int, int]]) -> tuple[Range, ...]:
    """Ranges from (first batch size, k) steps in increasing order: equal neighbours merged, the last written [lo, lo, k]."""
    merged: list[tuple[int, int]] = []
    for lo, k in steps:
        if not merged or merged[-1][1] != k:
            merged.append((lo, k))
    return tuple((lo, merged[i + 1][0] - 1 if i + 1 < len(merged) else lo, k) for i, (lo, k) in enumerate(merged))
