"""The SpeculativeServing models: defaults from the framework and cross-field rules."""

import pydantic
import pytest

from specserve import api
from tests.helpers import EXAMPLES, load_example, minimal_spec


def spec(**overrides):
    return api.SpeculativeServingSpec.model_validate(minimal_spec(**overrides))


def test_health_policy_defaults_follow_the_framework():
    policy = spec().health_policy
    assert policy.mode == "Enforce"
    assert policy.disable_below_acceptance == 0.50
    assert policy.watch_below_acceptance == 0.65
    assert policy.quantization_drop_threshold == 0.05
    assert policy.consecutive_breaches >= 2


def test_baseline_defaults_to_no_replicas():
    assert spec().baseline.replicas == 0


def test_engine_image_is_a_pinned_vllm_openai_tag():
    image = spec().engine.image
    assert image.startswith("vllm/vllm-openai:v") and image != "vllm/vllm-openai:latest"


@pytest.mark.parametrize("method", ["draft_model", "eagle", "eagle3"])
def test_methods_with_a_draft_model_require_one(method):
    with pytest.raises(pydantic.ValidationError, match="speculation.draft is required"):
        spec(speculation={"method": method})


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_modelless_methods_reject_a_draft(method):
    with pytest.raises(pydantic.ValidationError, match="must not be set"):
        spec(speculation={"method": method, "draft": {"model": "org/draft"}})


def test_mtp_needs_no_draft():
    assert spec(speculation={"method": "mtp"}).speculation.draft is None


def test_unknown_method_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="speculation.method"):
        api.SpeculativeServingSpec.model_validate(minimal_spec(speculation={"method": "medusa"}))


def test_k_outside_sane_range_is_rejected():
    with pytest.raises(pydantic.ValidationError):
        spec(speculation={"method": "ngram", "numSpeculativeTokens": 0})
    with pytest.raises(pydantic.ValidationError):
        spec(speculation={"method": "ngram", "numSpeculativeTokens": 64})


def test_batch_size_cutoff_must_be_positive():
    with pytest.raises(pydantic.ValidationError):
        spec(speculation={"method": "ngram", "disableAboveBatchSize": 0})


def test_thresholds_must_be_ordered():
    with pytest.raises(pydantic.ValidationError, match="disableBelowAcceptance must be lower"):
        spec(healthPolicy={"disableBelowAcceptance": 0.7, "watchBelowAcceptance": 0.6})


def test_variant_names_must_be_unique():
    variants = [{"name": "int8", "model": "a/b"}, {"name": "int8", "model": "a/c"}]
    with pytest.raises(pydantic.ValidationError, match="unique"):
        spec(target={"model": "a/b", "variants": variants})


def test_active_variant_must_be_declared():
    with pytest.raises(pydantic.ValidationError, match="activeVariant must name"):
        spec(target={"model": "a/b", "variants": [{"name": "int8", "model": "a/b"}], "activeVariant": "bf16"})


def test_draft_model_tensor_parallel_size_must_match_the_targets():
    draft = {"model": "org/draft", "tensorParallelSize": 1}
    with pytest.raises(pydantic.ValidationError, match="tensorParallelSize must equal gpu.count for draft_model"):
        spec(gpu={"count": 2}, speculation={"method": "draft_model", "draft": draft})
    assert spec(gpu={"count": 2}, speculation={"method": "draft_model", "draft": {**draft, "tensorParallelSize": 2}})


def test_eagle_head_may_run_on_one_gpu():
    assert spec(gpu={"count": 4}, speculation={"method": "eagle3", "draft": {"model": "org/head", "tensorParallelSize": 1}})


def test_gpus_cannot_be_requested_through_engine_resources():
    with pytest.raises(pydantic.ValidationError, match="spec.gpu.count"):
        spec(engine={"resources": {"limits": {"nvidia.com/gpu": 2}}})


def test_unknown_fields_are_rejected_with_their_name():
    with pytest.raises(pydantic.ValidationError, match="numSpecTokens"):
        spec(speculation={"method": "ngram", "numSpecTokens": 4})


def test_model_reference_must_be_an_hf_id_pvc_or_path():
    for good in ["meta-llama/Llama-3.1-8B", "hf://org/m", "pvc://weights/llama/8b", "/models/llama", "gpt2"]:
        assert spec(target={"model": good})
    with pytest.raises(pydantic.ValidationError):
        spec(target={"model": "s3://bucket/model"})


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_valid_speculative_serving(path):
    api.SpeculativeServing.model_validate(load_example(path))
