"""The GPU sweeps recorded by bench/gpu (tests/fixtures/gpu/<date>-<gpu>-vllm-<version>.json): each parses, says
where it was measured, served the arguments the operator rendered (with only the forced acceptance added), and
bench/gpu's parsing and summarizing of what vLLM said works. Reads JSON and bench/gpu's standard-library modules
by path; nothing from specserve (the CLI is called as a program where it is needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_FIXTURES = ROOT / "tests" / "fixtures" / "gpu"
BENCH = ROOT / "bench" / "gpu"
SWEEPS = sorted(GPU_FIXTURES.glob("20*-vllm-*.json"))
# bench.py's output against bench/gpu/fake_vllm.py on a CPU: the recording format, not a measurement
SAMPLE = BENCH / "dry-run-sample.json"
RECORDS = [*SWEEPS, SAMPLE]
CONFIGS = json.loads((BENCH / "configs.json").read_text())


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_gpu_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


parsing = _load("parsing")
summarize = _load("summarize")


def _sweep(path: Path) -> dict:
    return json.loads(path.read_text())


# Only once a GPU sweep is recorded (none yet: on 2026-12-08 no device machine could be started, issue 27); an empty
# parametrization would read as a skip.
if SWEEPS:

    @pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
    def test_recorded_sweeps_are_named_date_gpu_vllm_version(path: Path) -> None:
        assert len(path.stem.split("-vllm-")) == 2 and path.stem[:4].isdigit() and path.stem[10] == "-", path.name


    @pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
    def test_sweep_has_provenance_matching_its_name(path: Path) -> None:
        fx = _sweep(path)
        pv = fx["provenance"]
        for key in ("gpu", "driver", "vllm", "torch", "models"):
            assert pv.get(key), f"provenance lacks {key}"
        date, gpu_slug, version = path.stem.split("-vllm-")[0][:10], path.stem[11:].split("-vllm-")[0], path.stem.split("-vllm-")[1]
        assert fx["date"] == date
        assert pv["vllm"] == version
        assert gpu_slug in pv["gpu"].lower().replace(" ", "-")
        assert set(pv["models"]) == {"target", "draft"} and all(m["params"] > 0 for m in pv["models"].values())
        st = fx["settings"]
        assert st["batch_ladder"] and st["window_s"] > 0 and st["warm_s"] >= 0


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_every_config_served_what_the_operator_rendered_plus_the_forced_acceptance(path: Path) -> None:
    fx = _sweep(path)
    assert fx["configs"], "no configuration ran"
    for name, c in fx["configs"].items():
        rendered, served = c["rendered_args"], c["served_argv"]
        assert rendered[0] == "/tmp/models/target" and "--gpu-memory-utilization" in rendered, f"{name}: not a rendered vllm serve argv"
        i = rendered.index("--speculative-config") if "--speculative-config" in rendered else len(rendered)
        assert served[:i] == rendered[:i] and served[i + 2 : len(rendered)] == rendered[i + 2 :], f"{name}: args other than the speculative config changed"
        want, got = parsing.speculative_config(rendered), parsing.speculative_config(served)
        if want is None:
            assert got is None, f"{name}: a baseline served with speculation"
            continue
        method = c.get("method_override") or want["method"]
        assert got["method"] == method
        assert {k: v for k, v in got.items() if k in want and k != "method"} == {k: v for k, v in want.items() if k != "method"}, name
        assert got["rejection_sample_method"] == "synthetic"
        assert got["synthetic_acceptance_rates"] == parsing.forced_rates(c["acceptances"][0], want["num_speculative_tokens"])
        assert set(got) - set(want) == {"rejection_sample_method", "synthetic_acceptance_rates"}
        if c["schedule"]:
            assert got["num_speculative_tokens_per_batch_size"] == c["schedule"] == want["num_speculative_tokens_per_batch_size"]
            # the form the operator writes from disableAboveBatchSize: k up to the cut-off, 0 from there on
            (lo, cut, k), (above, last, zero) = c["schedule"]
            assert (lo, k, above, last, zero) == (1, want["num_speculative_tokens"], cut + 1, cut + 1, 0), name
        else:
            assert "num_speculative_tokens_per_batch_size" not in got, name


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_points_are_complete_and_the_spec_decode_counters_agree_with_the_config(path: Path) -> None:
    fx = _sweep(path)
    ladder = fx["settings"]["batch_ladder"]
    for name, c in fx["configs"].items():
        if not c.get("up"):
            continue
        spec = parsing.speculative_config(c["served_argv"])
        for p in c["points"]:
            assert p["b"] in ladder and p["out_tok_per_s"] > 0 and p["tpot_mean_ms"] > 0 and p["errors"] == 0, (name, p["b"])
            assert p["tpot_p50_ms"] <= p["tpot_p99_ms"]
            if spec is None:
                assert p["draft_tokens"] == 0 and p["acceptance_forced"] is None
                continue
            k = parsing.k_at(c["schedule"], spec["num_speculative_tokens"], p["b"])
            assert p["k_scheduled"] == k
            if k == 0:  # a schedule's k = 0 range: nothing drafted at all
                assert p["k_eff"] is not None and p["k_eff"] < 0.05, (name, p["b"], p["k_eff"])
            else:
                assert p["k_eff"] > 0.5 * k, (name, p["b"], p["k_eff"])


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_summarizer_reads_the_sweep(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summarize.main(str(path))
    out = capsys.readouterr().out
    assert "## Servers" in out and "## Points" in out
    fx = _sweep(path)
    if "baseline" in fx["configs"] and any(n.endswith("_sched") and fx["configs"][n]["points"] for n in fx["configs"]):
        rows = summarize.schedule_rows(fx)
        assert rows and all(r["over_base_tok"] is not None for r in rows)


# ------------------------------------------------------------------ configs.json against the operator


def test_configs_hold_the_schedules_the_operator_writes() -> None:
    c = CONFIGS["configs"]
    assert c["draft_k2_sched"]["schedule"] == [[1, 4, 2], [5, 5, 0]]
    assert c["draft_k4_sched"]["schedule"] == [[1, 4, 4], [5, 5, 0]]
    assert c["ngram_gpu_k4_sched"]["schedule"] == [[1, 16, 4], [17, 17, 0]]
    assert c["draft_k2"]["schedule"] is None and "--speculative-config" not in c["baseline"]["rendered_args"]
    assert "PIECEWISE" in c["baseline_pw"]["rendered_args"][-1]


def test_specserve_render_still_writes_the_recorded_arguments() -> None:
    """The operator's rendering today gives the args the sweep configs (and so the fixtures) were made from."""
    for name in ("baseline", "draft_k2_sched"):
        c = CONFIGS["configs"][name]
        out = subprocess.run([sys.executable, "-m", "specserve.cli", "render", c["spec"]], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        args_block = [c["rendered_args"][0]] + c["rendered_args"][1:]
        for arg in args_block:
            assert arg in out.stdout or json.dumps(arg) in out.stdout or f"'{arg}'" in out.stdout, (name, arg)


# ------------------------------------------------------------------ bench/gpu's parsing


def test_parse_metrics_reads_a_real_vllm_capture() -> None:
    text = (ROOT / "tests" / "fixtures" / "vllm-0.26.0-draft-model.metrics.txt").read_text()
    m = parsing.parse_metrics(text)
    assert m["vllm:spec_decode_num_draft_tokens_total"] > 0
    assert 0 < m["vllm:spec_decode_num_accepted_tokens_total"] < m["vllm:spec_decode_num_draft_tokens_total"]
    per_pos = [m[k] for k in sorted(m) if k.startswith("vllm:spec_decode_num_accepted_tokens_per_pos_total[")]
    assert len(per_pos) == 4 and per_pos == sorted(per_pos, reverse=True)
    assert not any(k.endswith("_created") for k in m)


def test_point_stats_derive_tokens_per_second_k_and_acceptance() -> None:
    before = {"vllm:generation_tokens_total": 1000.0, "vllm:iteration_tokens_total_count": 100.0}
    after = {"vllm:generation_tokens_total": 1900.0, "vllm:iteration_tokens_total_count": 400.0,
             "vllm:spec_decode_num_drafts_total": 300.0, "vllm:spec_decode_num_draft_tokens_total": 600.0,
             "vllm:spec_decode_num_accepted_tokens_total": 450.0}
    reqs = [(0.0, 0.01, 0.01 + 0.005 * 127, 128), (0.0, 0.02, None, 0)]
    p = parsing.point_stats(before, after, 3.0, reqs)
    assert p["out_tok_per_s"] == 300.0 and p["step_ms_server"] == 10.0
    assert p["acceptance"] == 0.75 and p["mean_accept_len"] == 2.5
    assert p["k_eff"] == round(600 / (900 - 450), 3) and p["k_per_draft"] == 2.0
    assert p["requests_done"] == 1 and p["tpot_mean_ms"] == 5.0 and p["ttft_mean_ms"] == 10.0


def test_log_facts_read_kv_capacity_graph_mode_and_runner() -> None:
    lines = [
        ("WARNING [vllm.py:832] Dynamic speculative decoding changes the target verification length at runtime. "
         "Overriding cudagraph_mode from FULL_AND_PIECEWISE to PIECEWISE for reliability."),
        "WARNING Model Runner V2 does not yet support speculative method 'draft_model'; using the V1 model runner instead.",
        "INFO [core.py:117] Initializing a V1 LLM engine (v0.26.0) with config: ..., 'cudagraph_mode': <CUDAGraphMode.PIECEWISE: 1>, ...",
        "INFO Available KV cache memory: 48.31 GiB",
        "INFO [kv_cache_utils.py:2177] GPU KV cache size: 395,776 tokens",
        "INFO Maximum concurrency for 2,048 tokens per request: 193.25x",
        "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|##| 67/67 [00:05<00:00]\r",
        "INFO Graph capturing finished in 7 secs, took 0.61 GiB",
    ]
    f = parsing.log_facts("\n".join(lines))
    assert f["kv_cache_tokens"] == 395776 and f["kv_cache_gib"] == 48.31 and f["max_concurrency"] == 193.25
    assert f["cudagraph_mode"] == "PIECEWISE" and f["cudagraph_override"] == ["FULL_AND_PIECEWISE", "PIECEWISE"]
    assert f["cudagraph_captured"] == ["mixed prefill-decode:PIECEWISE"] and f["model_runner"] == "V1"
    assert f["vllm_version"] == "0.26.0" and f["graph_capture_s"] == 7
    assert parsing.log_facts("")["kv_cache_tokens"] is None


def test_served_argv_changes_only_the_speculative_config() -> None:
    rendered = CONFIGS["configs"]["ngram_gpu_k4_sched"]["rendered_args"]
    served = parsing.served_argv(rendered, alpha=0.5, method="ngram_gpu", extra=["--worker-extension-cls", "x.Y"])
    i = rendered.index("--speculative-config")
    assert served[:i] == rendered[:i] and served[-2:] == ["--worker-extension-cls", "x.Y"]
    spec = json.loads(served[i + 1])
    assert spec["method"] == "ngram_gpu" and spec["synthetic_acceptance_rates"] == [0.5, 0.25, 0.125, 0.0625]
    assert spec["num_speculative_tokens_per_batch_size"] == [[1, 16, 4], [17, 17, 0]]
    assert parsing.served_argv(CONFIGS["configs"]["baseline"]["rendered_args"], alpha=0.8) == CONFIGS["configs"]["baseline"]["rendered_args"]


@pytest.mark.parametrize(("batch", "k"), [(1, 2), (4, 2), (5, 0), (6, 0), (128, 0)])
def test_k_at_follows_vllms_dense_schedule(batch: int, k: int) -> None:
    assert parsing.k_at([[1, 4, 2], [5, 5, 0]], 2, batch) == k
    assert parsing.k_at(None, 2, batch) == 2
    assert parsing.k_at([[1, 2, 4], [9, 9, 1]], 2, 5) == 2  # gaps carry the previous range's k, capped at the max


def test_schedule_rows_compare_below_the_threshold_with_the_twin_and_above_with_the_baseline() -> None:
    def pt(b: int, tok: float, acc: float | None = None) -> dict:
        return {"b": b, "acceptance_forced": acc, "out_tok_per_s": tok, "tpot_mean_ms": 1000.0 / tok * b, "k_eff": 0}

    fx = {"configs": {
        "baseline": {"points": [pt(1, 100), pt(8, 600)], "schedule": None},
        "draft_k2": {"points": [pt(1, 150, 0.8), pt(8, 400, 0.8)], "schedule": None},
        "draft_k2_sched": {"points": [pt(1, 147, 0.8), pt(8, 540, 0.8)], "schedule": [[1, 4, 2], [5, 5, 0]]},
    }}
    rows = {r["b"]: r for r in summarize.schedule_rows(fx)}
    assert summarize.threshold([[1, 4, 2], [5, 5, 0]]) == 4 and summarize.threshold([[1, 1, 2]]) is None
    assert rows[1]["should_match"] == "draft_k2" and rows[1]["over_expected_tok"] == pytest.approx(0.98)
    assert rows[8]["should_match"] == "baseline" and rows[8]["over_expected_tok"] == pytest.approx(0.9)
    assert rows[8]["over_twin_tok"] == pytest.approx(1.35) and rows[8]["over_best_tok"] == pytest.approx(0.9)
