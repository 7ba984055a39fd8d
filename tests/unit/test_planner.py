"""The memory planner: FRAMEWORK.md's worked examples, verdicts, precision rules, properties and `specserve plan`.

Weights are compared with the framework's decimal GB; every other figure is in GiB (2^30 bytes).
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specserve import api, catalog
from specserve.cli import commands
from specserve.rendering import planner, sizing
from tests.helpers import EXAMPLES, load_example, minimal_spec, serving

GB = 1e9
GIB = 2**30

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
LLAMA_70B_INT8 = "neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8"
LLAMA_70B_INT4 = "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_8B_INT8 = "neuralmagic/Meta-Llama-3.1-8B-Instruct-quantized.w8a8"
CUSTOM_70B = {"parametersBillions": 70, "layers": 80, "kvHeads": 8, "headDim": 128, "maxContext": 32768}


def spec(**overrides):
    return api.SpeculativeServingSpec.model_validate(minimal_spec(**overrides))


def draft_spec(target_model, draft_model, gpus=2, product="H100-80GB", target_quantization=None, **overrides):
    target_section = {"model": target_model, **({"quantization": target_quantization} if target_quantization else {})}
    fields = {
        "target": target_section,
        "gpu": {"count": gpus, "product": product},
        "speculation": {"method": "draft_model", "draft": {"model": draft_model}},
        "engine": {"maxModelLen": 16384},
    }
    return spec(**{**fields, **overrides})


def active(s, **kwargs):
    return planner.plan(s, **kwargs).active


def weights_gb(result):
    return (result.target_weights_gib + result.draft_weights_gib) * GIB / GB


# ---------------------------------------------------------------- FRAMEWORK.md worked examples


def test_bf16_70b_with_bf16_8b_draft_does_not_fit_two_h100():
    result = active(draft_spec(LLAMA_70B, LLAMA_8B))
    assert weights_gb(result) == pytest.approx(156, rel=0.02)
    assert not result.fits
    assert any(e.startswith("does not fit") for e in result.errors)


def test_int8_70b_with_bf16_8b_draft_leaves_the_usual_kv_cache_on_two_h100():
    result = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B))
    assert weights_gb(result) == pytest.approx(86, rel=0.02)
    assert result.kv_cache_gib == pytest.approx(59.5, abs=0.1)
    # the framework's ~74 GB is before gpu_memory_utilization and the activation allowance
    assert 0.8 * 74 <= result.kv_cache_gib * GIB / GB <= 74
    assert result.fits and result.max_concurrent_sequences == 8


def test_int8_draft_with_int8_70b_weighs_about_78_gb():
    result = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B_INT8))
    assert weights_gb(result) == pytest.approx(78, rel=0.02)
    assert result.kv_cache_gib == pytest.approx(67.4, abs=0.1)


def test_int4_70b_with_bf16_8b_draft_fits_one_h100():
    result = active(draft_spec(LLAMA_70B_INT4, LLAMA_8B, gpus=1, target_quantization="awq_marlin"))
    assert weights_gb(result) == pytest.approx(51, rel=0.02)
    assert result.kv_cache_gib == pytest.approx(21.9, abs=0.1)
    assert result.fits


def test_two_h200_fit_bf16_70b_with_about_1_7x_the_h100_int8_kv_cache():
    h200 = active(draft_spec(LLAMA_70B, LLAMA_8B, product="H200-141GB"))
    h100_int8 = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B))
    assert h200.fits
    assert h200.kv_cache_gib == pytest.approx(102.8, abs=0.1)
    assert h200.kv_cache_gib / h100_int8.kv_cache_gib == pytest.approx(1.7, abs=0.05)


# ---------------------------------------------------------------- budget formulas


def test_usable_vram_is_gpus_times_memory_times_utilization():
    result = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B, engine={"maxModelLen": 16384, "gpuMemoryUtilization": 0.9}))
    assert result.usable_vram_gib == pytest.approx(2 * 80 * 0.9)


def test_allowance_is_a_fixed_amount_per_gpu_plus_a_share_of_the_weights():
    assert planner.activation_allowance(2, 100 * GIB) == pytest.approx((2 * planner.ALLOWANCE_GIB_PER_GPU + planner.ALLOWANCE_SHARE_OF_WEIGHTS * 100) * GIB)


def test_kv_cache_is_usable_minus_weights_minus_allowance():
    r = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B))
    assert r.kv_cache_gib == pytest.approx(r.usable_vram_gib - r.target_weights_gib - r.draft_weights_gib - r.allowance_gib)


def test_kv_bytes_per_token_counts_target_and_draft_layers():
    result = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B))
    target = 2 * 80 * 8 * 128 * 2
    draft = 2 * 32 * 8 * 128 * 2
    assert result.kv_bytes_per_token == target + draft


def test_fp8_kv_cache_halves_kv_bytes_per_token():
    auto = active(spec(target={"model": LLAMA_8B}, gpu={"product": "L40S"}))
    fp8 = active(spec(target={"model": LLAMA_8B}, gpu={"product": "L40S"}, engine={"kvCacheDtype": "fp8"}))
    assert fp8.kv_bytes_per_token * 2 == auto.kv_bytes_per_token


def test_kv_heads_are_replicated_when_gpus_outnumber_them():
    shape = catalog.model_architectures()["qwen2.5-7b"]  # 4 KV heads
    engine = api.Engine()
    assert sizing.kv_bytes_per_token(shape, 28, 8, engine) == 8 * 2 * 28 * 1 * 128 * 2


def test_latent_attention_caches_one_latent_per_layer_on_every_gpu():
    shape = catalog.model_architectures()["deepseek-v3"]
    assert sizing.kv_bytes_per_token(shape, 61, 8, api.Engine()) == 8 * 61 * (512 + 64) * 2


def test_max_concurrent_sequences_use_the_catalog_context_without_max_model_len():
    result = active(spec(target={"model": LLAMA_8B}, gpu={"product": "H100-80GB"}))
    assert result.max_model_len == 131072
    assert result.max_concurrent_sequences == result.kv_cache_tokens // 131072


def test_target_share_is_of_gpu_memory_and_draft_share_of_usable_vram():
    r = active(draft_spec(LLAMA_70B_INT8, LLAMA_8B))
    assert r.target_share_of_gpu_memory == pytest.approx(r.target_weights_gib / 160)
    assert r.draft_share_of_vram == pytest.approx(r.draft_weights_gib / r.usable_vram_gib)


# ---------------------------------------------------------------- proposers


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_modelless_proposers_cost_no_weights_and_no_kv(method):
    with_it = active(spec(target={"model": LLAMA_8B}, gpu={"product": "L4"}, speculation={"method": method}, engine={"maxModelLen": 8192}))
    without = active(spec(target={"model": LLAMA_8B}, gpu={"product": "L4"}, speculation={"method": method}, engine={"maxModelLen": 8192}), speculation=False)
    assert with_it.draft_weights_gib == 0
    assert with_it.kv_cache_tokens == without.kv_cache_tokens


def test_eagle_head_counts_its_own_weights_and_one_layer_of_the_targets_shape():
    s = spec(target={"model": LLAMA_8B}, gpu={"product": "L40S"}, speculation={"method": "eagle3", "draft": {"model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"}})
    result = active(s)
    assert result.draft_weights_gib == pytest.approx(0.42e9 * 2 / GIB)
    assert result.kv_bytes_per_token == (32 + 1) * 2 * 8 * 128 * 2


def test_mtp_module_of_deepseek_v3_comes_from_the_catalog_at_fp8():
    result = active(spec(target={"model": "deepseek-ai/DeepSeek-V3"}, gpu={"count": 8, "product": "H200-141GB"}, speculation={"method": "mtp"}))
    assert (result.target_precision, result.draft_precision) == ("fp8", "fp8")
    assert result.draft_weights_gib == pytest.approx(14e9 / GIB)
    assert result.kv_bytes_per_token == 8 * (61 + 1) * (512 + 64) * 2


def test_mtp_for_a_model_without_a_module_names_the_field_to_set():
    result = active(spec(target={"model": LLAMA_8B}, gpu={"product": "H100-80GB"}, speculation={"method": "mtp"}))
    assert any("spec.speculation.draft.architecture" in e and "MTP" in e for e in result.errors)


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("model", "quantization", "precision"),
    [
        ("org/any-70b", "fp8", "fp8"),
        ("org/any-70b", "modelopt", "fp8"),
        ("org/any-70b", "awq", "int4"),
        ("org/any-70b", "awq_marlin", "int4"),
        ("org/any-70b", "modelopt_fp4", "fp4"),
        ("org/any-70b", "mxfp4", "fp4"),
        ("org/any-70b-w8a8", "compressed-tensors", "int8"),
        ("org/any-70b-quantized.w4a16", "compressed-tensors", "int4"),
        ("org/any-70b-GPTQ-Int8", "gptq_marlin", "int8"),
        ("org/any-70b-GPTQ-Int4", "gptq", "int4"),
    ],
)
def test_quantization_methods_map_to_their_precision(model, quantization, precision):
    result = active(spec(target={"model": model, "quantization": quantization, "architecture": CUSTOM_70B}, gpu={"count": 4, "product": "H100-80GB"}))
    assert result.target_precision == precision
    bytes_per_parameter = catalog.quantization_rules().bytes_per_parameter[precision]
    assert result.target_weights_gib == pytest.approx(70e9 * bytes_per_parameter / GIB)


def test_compressed_tensors_without_a_name_hint_assumes_w8a8_and_says_so():
    result = active(spec(target={"model": "org/any-70b", "quantization": "compressed-tensors", "architecture": CUSTOM_70B}, gpu={"count": 4, "product": "H100-80GB"}))
    assert result.target_precision == "int8"
    assert any("assumed int8" in w for w in result.warnings)


def test_unknown_quantization_counts_the_dtype_and_warns():
    result = active(spec(target={"model": "org/any-70b", "quantization": "mystery", "architecture": CUSTOM_70B}, gpu={"count": 4, "product": "H100-80GB"}))
    assert result.target_precision == "bf16"
    assert any("'mystery' is unknown" in w for w in result.warnings)


def test_checkpoint_name_states_the_precision_when_quantization_is_omitted():
    assert active(spec(target={"model": "Qwen/Qwen2.5-72B-Instruct-AWQ"}, gpu={"count": 2, "product": "H100-80GB"})).target_precision == "int4"


def test_float32_dtype_doubles_unquantized_weights():
    half = active(spec(target={"model": LLAMA_8B}, gpu={"product": "H100-80GB"}))
    full = active(spec(target={"model": LLAMA_8B}, gpu={"product": "H100-80GB"}, engine={"dtype": "float32"}))
    assert full.target_weights_gib == pytest.approx(2 * half.target_weights_gib)


# ---------------------------------------------------------------- verdicts


def test_kv_cache_smaller_than_one_max_length_sequence_is_an_error():
    result = active(draft_spec(LLAMA_70B_INT4, LLAMA_8B, gpus=1, target_quantization="awq_marlin", engine={"maxModelLen": 131072}))
    assert any("fewer than one sequence of max model length 131,072" in e for e in result.errors)


def test_draft_above_15_percent_of_usable_vram_warns():
    result = active(draft_spec(LLAMA_70B_INT4, LLAMA_8B, gpus=1, target_quantization="awq_marlin"))
    assert any("the draft takes 20% of usable VRAM" in w for w in result.warnings)


def test_target_above_70_percent_of_gpu_memory_with_a_draft_warns():
    result = active(draft_spec(LLAMA_70B, "meta-llama/Llama-3.2-1B-Instruct"))
    assert any("the target alone takes 82% of GPU memory" in w for w in result.warnings)


def test_target_above_70_percent_without_a_draft_is_no_warning():
    result = active(spec(target={"model": LLAMA_70B}, gpu={"count": 2, "product": "H100-80GB"}, engine={"maxModelLen": 4096}))
    assert result.warnings == ()


def test_draft_ratio_outside_1_8_to_1_12_is_advised_with_the_ratio():
    result = active(draft_spec(LLAMA_70B_INT8, "meta-llama/Llama-3.2-1B-Instruct"))
    assert any("draft:target size ratio is 1:57" in w for w in result.warnings)


def test_draft_ratio_inside_1_8_to_1_12_is_no_warning():
    assert active(draft_spec(LLAMA_70B_INT8, LLAMA_8B)).warnings == ()


def test_different_tokenizer_families_warn():
    result = active(draft_spec(LLAMA_70B_INT8, "Qwen/Qwen2.5-7B-Instruct"))
    assert any("tokenizer family 'qwen2' differs from the target's 'llama-3'" in w for w in result.warnings)


def test_eagle_head_trained_for_another_target_warns():
    s = spec(target={"model": LLAMA_70B_INT8}, gpu={"count": 2, "product": "H100-80GB"}, speculation={"method": "eagle", "draft": {"model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"}})
    assert any("was trained for llama-3.1-8b" in w for w in active(s).warnings)


# ---------------------------------------------------------------- models the catalog lacks


def test_unknown_target_names_the_architecture_field_to_set():
    result = active(spec(target={"model": "org/mystery"}, gpu={"product": "H100-80GB"}))
    assert not result.fits
    assert result.errors == ("model 'org/mystery' is not in the model catalog: describe it in spec.target.architecture (parametersBillions, layers, kvHeads, headDim)",)


def test_unknown_variant_names_its_own_architecture_field():
    s = spec(target={"model": LLAMA_8B, "variants": [{"name": "odd", "model": "org/odd"}]}, gpu={"product": "H100-80GB"})
    assert active(s).fits  # the target's own catalog entry describes its variants
    s = spec(target={"model": "org/base", "variants": [{"name": "odd", "model": "org/odd"}]}, gpu={"product": "H100-80GB"})
    assert any("spec.target.variants[0].architecture" in e for e in active(s).errors)


def test_unknown_draft_names_the_draft_architecture_field():
    result = active(draft_spec(LLAMA_70B_INT8, "org/tiny"))
    assert any("spec.speculation.draft.architecture (parametersBillions, layers, kvHeads, headDim)" in e for e in result.errors)


def test_spec_architecture_describes_a_model_the_catalog_lacks():
    result = active(spec(target={"model": "org/custom", "architecture": CUSTOM_70B}, gpu={"count": 4, "product": "H100-80GB"}))
    assert result.fits and result.target_weights_gib == pytest.approx(140e9 / GIB)
    assert result.max_model_len == 32768


def test_spec_architecture_overrides_the_catalog_field_by_field():
    result = active(spec(target={"model": LLAMA_8B, "architecture": {"maxContext": 8192}}, gpu={"product": "L4"}))
    assert result.max_model_len == 8192 and result.target_weights_gib == pytest.approx(8.03e9 * 2 / GIB)


def test_max_model_len_unknown_is_an_error():
    described = {k: v for k, v in CUSTOM_70B.items() if k != "maxContext"}
    result = active(spec(target={"model": "org/custom", "architecture": described}, gpu={"count": 2, "product": "H100-80GB"}))
    assert any("spec.engine.maxModelLen" in e for e in result.errors)


def test_gpu_memory_gib_serves_products_the_catalog_lacks():
    assert active(spec(gpu={"memoryGiB": 96})).gpu_memory_gib == 96


def test_unknown_gpu_product_without_memory_is_an_error():
    assert any("set spec.gpu.memoryGiB" in e for e in active(spec(gpu={"product": "X9"})).errors)


def test_no_gpu_memory_at_all_is_an_error():
    assert any("set spec.gpu.product" in e for e in active(spec()).errors)


# ---------------------------------------------------------------- variants, JSON and fitting_variants


def ladder(product="H100-80GB", **target):
    variants = [
        {"name": "int4", "model": LLAMA_70B_INT4, "quantization": "awq_marlin"},
        {"name": "int8", "model": LLAMA_70B_INT8},
        {"name": "bf16", "model": LLAMA_70B},
    ]
    return draft_spec(LLAMA_70B, LLAMA_8B, product=product, target={"model": LLAMA_70B, "variants": variants, **target})


def test_fitting_variants_leave_out_those_that_do_not_fit():
    assert planner.fitting_variants(ladder()) == {"int4", "int8"}
    assert planner.fitting_variants(ladder(product="H200-141GB")) == {"int4", "int8", "bf16"}


def test_plan_json_describes_the_active_variant_and_lists_every_variant():
    document = planner.plan(ladder(activeVariant="int8")).to_json()
    required = {"targetWeightsGiB", "draftWeightsGiB", "usableVramGiB", "kvCacheGiB", "maxConcurrentSequences", "draftShareOfVram", "fits", "warnings", "errors"}
    assert required <= document.keys()
    assert document["name"] == document["activeVariant"] == "int8"
    assert [v["name"] for v in document["variants"]] == ["int4", "int8", "bf16"]
    assert all(required <= v.keys() for v in document["variants"])
    json.dumps(document)


def test_active_variant_defaults_to_the_first():
    assert planner.plan(ladder()).active.name == "int4"


def test_plain_target_plan_has_no_variants():
    result = planner.plan(spec(gpu={"product": "L4"}, engine={"maxModelLen": 8192}))
    assert result.active.name is None and result.variants == ()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_planned_from_the_catalog_and_fits(path):
    budget = planner.plan(api.SpeculativeServing.model_validate(load_example(path)).spec)
    assert all(v.fits for v in (budget.active, *budget.variants)), [v.errors for v in budget.variants] or budget.active.errors


# ---------------------------------------------------------------- properties

GPU_PRODUCTS = [p.name for p in catalog.gpu_products().values()]
DENSE_TARGETS = [ids[0] for ids in (a.checkpoints for a in catalog.model_architectures().values() if a.kind in ("dense", "moe") and a.latent_attention is None)]

architectures = st.fixed_dictionaries(
    {
        "parametersBillions": st.floats(0.1, 500),
        "layers": st.integers(1, 128),
        "kvHeads": st.sampled_from([1, 2, 4, 8, 16, 32]),
        "headDim": st.sampled_from([64, 128, 256]),
    }
)
engines = st.fixed_dictionaries({"gpuMemoryUtilization": st.floats(0.1, 1.0), "maxModelLen": st.integers(256, 131072), "kvCacheDtype": st.sampled_from(["auto", "fp8"])})
speculations = st.one_of(
    st.just({"method": "ngram"}),
    st.sampled_from(DENSE_TARGETS).map(lambda d: {"method": "draft_model", "draft": {"model": d}}),
    st.sampled_from(["yuhuili/EAGLE3-LLaMA3.1-Instruct-8B", "yuhuili/EAGLE-LLaMA3.1-Instruct-70B"]).map(lambda d: {"method": "eagle3", "draft": {"model": d}}),
)


@settings(max_examples=200, deadline=None)
@given(architecture=architectures, gpus=st.integers(1, 8), product=st.sampled_from(GPU_PRODUCTS), engine=engines, speculation=speculations)
def test_lower_precision_target_never_leaves_less_kv_cache(architecture, gpus, product, engine, speculation):
    variants = [
        {"name": "int4", "model": "org/custom-awq", "quantization": "awq_marlin"},
        {"name": "int8", "model": "org/custom-w8a8", "quantization": "compressed-tensors"},
        {"name": "bf16", "model": "org/custom"},
    ]
    s = spec(target={"model": "org/custom", "architecture": architecture, "variants": variants}, gpu={"count": gpus, "product": product}, engine=engine, speculation=speculation)
    int4, int8, bf16 = planner.plan(s).variants
    assert int4.kv_cache_gib >= int8.kv_cache_gib >= bf16.kv_cache_gib
    assert int4.fits >= int8.fits >= bf16.fits


@settings(max_examples=200, deadline=None)
@given(target=st.sampled_from(DENSE_TARGETS), gpus=st.integers(1, 8), product=st.sampled_from(GPU_PRODUCTS), engine=engines, speculation=speculations)
def test_adding_a_draft_never_adds_kv_cache(target, gpus, product, engine, speculation):
    s = spec(target={"model": target}, gpu={"count": gpus, "product": product}, engine=engine, speculation=speculation)
    with_draft, without = active(s), active(s, speculation=False)
    assert with_draft.kv_cache_gib <= without.kv_cache_gib
    assert with_draft.kv_cache_tokens <= without.kv_cache_tokens
    assert with_draft.fits <= without.fits


@settings(max_examples=200, deadline=None)
@given(target=st.sampled_from(DENSE_TARGETS), gpus=st.integers(1, 15), product=st.sampled_from(GPU_PRODUCTS), engine=engines, speculation=speculations)
def test_more_gpus_never_fit_less(target, gpus, product, engine, speculation):
    fewer = active(spec(target={"model": target}, gpu={"count": gpus, "product": product}, engine=engine, speculation=speculation))
    more = active(spec(target={"model": target}, gpu={"count": gpus + 1, "product": product}, engine=engine, speculation=speculation))
    assert more.fits >= fewer.fits
    assert more.kv_cache_tokens >= fewer.kv_cache_tokens


# ---------------------------------------------------------------- specserve plan


def write(tmp_path, document):
    path = tmp_path / "serving.yaml"
    path.write_text(json.dumps(document))
    return path


def ladder_file(tmp_path):
    return write(tmp_path, {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama"}, "spec": ladder(activeVariant="int8").wire()})


def test_plan_command_prints_one_row_per_variant_and_marks_the_active_one(tmp_path, capsys):
    assert commands.main(["plan", str(ladder_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("default/llama: usable VRAM 147.2 GiB, max model length 16,384")
    assert "*int8" in out and " int4" in out and " bf16" in out
    assert "bf16 error: does not fit" in out


def test_plan_command_json_is_one_object_for_the_active_variant(tmp_path, capsys):
    assert commands.main(["plan", str(ladder_file(tmp_path)), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["activeVariant"] == "int8" and document["fits"] is True


def test_plan_command_exits_1_when_the_active_variant_does_not_fit(tmp_path, capsys):
    document = serving(name="too-big", target={"model": LLAMA_70B}, gpu={"count": 1, "product": "H100-80GB"})
    assert commands.main(["plan", str(write(tmp_path, document))]) == 1
    assert "does not fit" in capsys.readouterr().out


# ---------------------------------------------------------------- one verdict per question


def test_every_variant_gets_the_memory_budget_conditions_word():
    budget = planner.plan(ladder(activeVariant="int8"))
    assert [planner.judge(v).reason for v in budget.variants] == ["Fits", "Fits", "DoesNotFit"]
    assert [v["verdict"] for v in budget.to_json()["variants"]] == ["Fits", "Fits", "DoesNotFit"]
    assert set(planner.VERDICTS) >= {planner.judge(v).reason for v in budget.variants}


def test_the_serving_verdict_is_its_active_variants():
    for name in ("int4", "bf16"):
        budget = planner.plan(ladder(activeVariant=name))
        assert planner.verdict(budget) == planner.judge(budget.active)
    assert planner.verdict(planner.plan(ladder(activeVariant="bf16"))).blocking


def test_plan_table_has_a_verdict_column_in_the_conditions_words(tmp_path, capsys):
    assert commands.main(["plan", str(ladder_file(tmp_path))]) == 0
    header, *rows = capsys.readouterr().out.splitlines()[1:5]
    assert header.split()[-1] == "VERDICT" and "FITS" not in header
    assert [row.split()[0] for row in rows] == ["int4", "*int8", "bf16"]
    assert [row.split()[-1] for row in rows] == ["Fits", "Fits", "DoesNotFit"]


def test_plan_table_ends_with_what_the_operator_does(tmp_path, capsys):
    assert commands.main(["plan", str(ladder_file(tmp_path))]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "MemoryBudget True/Fits: the operator applies it"
