"""Text report of a memory Plan for `specserve plan`: one table row per variant with its verdict, then its warnings and errors.

Pure formatting; the numbers and verdicts come from planner.py (the same planner.verdict the operator applies or refuses by).
"""

from __future__ import annotations

from specserve.rendering import planner

COLUMNS = ("VARIANT", "TARGET", "PRECISION", "TARGET GiB", "DRAFT GiB", "KV CACHE GiB", "SEQS@MAXLEN", "DRAFT/VRAM", "TARGET/GPU", "VERDICT")


def report(title: str, plan: planner.Plan) -> str:
    """A heading, the table (the active variant marked with *), each variant's warnings and errors, and what the operator does."""
    rows = plan.variants or (plan.active,)
    first = plan.active
    heading = f"{title}: usable VRAM {_gib(first.usable_vram_gib)} GiB, max model length {_count(first.max_model_len)}"
    table = _table([COLUMNS, *(_row(v, v is plan.active) for v in rows)])
    notes = [f"  {_label(v)} {kind}: {text}" for v in rows for kind, texts in (("error", v.errors), ("warning", v.warnings)) for text in texts]
    return "\n".join([heading, table, *notes, outcome(planner.verdict(plan))]) + "\n"


def outcome(verdict: planner.Verdict) -> str:
    """The line saying whether the operator applies the serving, by the active variant's verdict."""
    if verdict.blocking:
        return f"MemoryBudget {verdict.status}/{verdict.reason}: the operator refuses it (Accepted=False, {planner.REFUSED_REASON}); nothing is applied"
    return f"MemoryBudget {verdict.status}/{verdict.reason}: the operator applies it"


def _row(v: planner.VariantPlan, active: bool) -> tuple[str, ...]:
    precision = v.target_precision or "-"
    if v.draft_precision:
        precision += f" + {v.draft_precision}"
    return (
        f"{'*' if active else ' '}{_label(v)}",
        v.target_model,
        precision,
        _gib(v.target_weights_gib),
        _gib(v.draft_weights_gib),
        _gib(v.kv_cache_gib),
        _count(v.max_concurrent_sequences),
        _share(v.draft_share_of_vram),
        _share(v.target_share_of_gpu_memory),
        planner.judge(v).reason,
    )


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _label(v: planner.VariantPlan) -> str:
    return v.name or "target"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
