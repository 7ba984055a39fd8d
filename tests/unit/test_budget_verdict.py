"""The MemoryBudget verdict: which plans block applying, which only warn, which cannot be judged."""

from specserve import api
from specserve.rendering import planner
from tests.helpers import minimal_spec


def verdict(**overrides):
    return planner.verdict(planner.plan(api.SpeculativeServingSpec.model_validate(minimal_spec(**overrides))))


H100x2 = {"count": 2, "product": "H100-80GB"}
ENGINE = {"maxModelLen": 16384}


def test_does_not_fit_blocks():
    v = verdict(target={"model": "meta-llama/Llama-3.1-70B-Instruct"}, gpu=H100x2, engine=ENGINE,
                speculation={"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"}})
    assert (v.status, v.reason, v.blocking) == ("False", "DoesNotFit", True)


def test_unknown_gpu_memory_cannot_be_judged_and_does_not_block():
    v = verdict(target={"model": "meta-llama/Llama-3.1-8B-Instruct"}, engine=ENGINE)
    assert (v.status, v.reason, v.blocking) == ("Unknown", "CannotJudge", False)
    assert "spec.gpu.memoryGiB" in v.message


def test_fitting_plan_quotes_its_numbers():
    v = verdict(target={"model": "meta-llama/Llama-3.1-8B-Instruct"}, gpu={"count": 1, "product": "H100-80GB"}, engine=ENGINE)
    assert v.status == "True" and not v.blocking and "sequences at 16384 tokens" in v.message
