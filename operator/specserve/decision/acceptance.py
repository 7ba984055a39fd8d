"""Draft acceptance as the goodput model reads it: per-position rates, accepted length, rates from a single number.

Per-position rates are unconditional (accepted at position i over drafts) and never rise with position.
"""

from __future__ import annotations

from collections.abc import Sequence


def clean_per_position(per_position: Sequence[float]) -> tuple[float, ...]:
    """Per-position rates as probabilities that never rise with position (accepting i+1 needs i accepted)."""
    cleaned: list[float] = []
    ceiling = 1.0
    for rate in per_position:
        value = min(ceiling, max(0.0, float(rate)))  # max(0.0, nan) is 0.0
        cleaned.append(value)
        ceiling = value
    return tuple(cleaned)



def extend_per_position(per_position: Sequence[float], k: int) -> tuple[float, ...]:
    """The first k per-position rates (clean ones: see clean_per_position); past the measured ones each position
    keeps the last conditional rate."""
    rates = tuple(per_position)
    if k <= len(rates):
        return rates[:k]
    if not rates:
        return (0.0,) * k
    conditional = rates[-1] / rates[-2] if len(rates) >= 2 and rates[-2] > 0 else rates[-1]
    extended = list(rates)
    while len(extended) < k:
        extended.append(extended[-1] * conditional)
    return tuple(extended)



def accepted_length(per_position: Sequence[float], k: int | None = None) -> float:
    """Mean accepted length AL(k) = 1 + sum of p_i for i < k (k defaults to the positions given)."""
    k = len(per_position) if k is None else k
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return 1.0 + sum(extend_per_position(per_position, k))



def per_position_for_token_acceptance(a: float, k: int) -> tuple[float, ...]:
    """Per-position rates [a, a^2, ..., a^k] when each draft is kept with probability a given the ones before."""
    return tuple(a ** (i + 1) for i in range(k))



def per_position_for_acceptance_rate(rate: float, k: int) -> tuple[float, ...]:
    """Per-position rates whose accepted/drafted ratio at k is vLLM's acceptance rate, with a constant conditional rate."""
    if k <= 0:
        return ()
    target = min(1.0, max(0.0, rate))
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        if sum(mid ** (i + 1) for i in range(k)) / k < target:
            low = mid
        else:
            high = mid
    return per_position_for_token_acceptance((low + high) / 2, k)
