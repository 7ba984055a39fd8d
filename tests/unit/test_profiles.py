"""vLLM by release, and what a configuration costs as a whole: off, a fixed k, a schedule and its k=0 ranges."""

from __future__ import annotations

import pytest

from specserve import api
from specserve.decision import configurations, goodput, policy
from specserve.decision.acceptance import per_position_for_token_acceptance
from specserve.decision.proposers import proposer_for
from specserve.engine import profiles
from tests.helpers import minimal_spec

DRAFT = proposer_for("draft_model")
NGRAM = proposer_for("ngram_gpu")
RATES = per_position_for_token_acceptance(0.8, 4)


@pytest.mark.parametrize(("image", "version"), [
    ("vllm/vllm-openai:v0.33.0", (0, 33)), ("vllm/vllm-openai:v0.26.1", (0, 26)), ("registry.local/vllm:0.30.2-cu130", (0, 30)),
    ("vllm/vllm-openai:latest", None), ("vllm/vllm-openai@sha256:abc", None),
])
def test_the_release_is_read_from_the_image_tag(image, version):
    assert profiles.version_of_image(image) == version


def test_an_unknown_release_takes_the_nearest_older_profile_and_no_release_the_newest():
    assert profiles.profile_for((0, 30)).version == (0, 26)
    assert profiles.profile_for((0, 40)).version == (0, 33)
    assert profiles.profile_for(None).version == profiles.PROFILES[-1].version
    assert not profiles.profile_for((0, 26)).custom_histogram_buckets and profiles.profile_for((0, 33)).custom_histogram_buckets


def test_the_spec_s_vllm_version_wins_over_the_image_tag():
    spec = api.SpeculativeServingSpec.model_validate(minimal_spec(engine={"image": "my/vllm:custom", "vllmVersion": "0.26.0"}))
    assert policy.setup_for(spec).profile.version == (0, 26)


def test_off_is_the_baseline_and_certain():
    off = configurations.speedup_under(configurations.OFF, 64, goodput.prior_estimator(RATES, DRAFT), configurations.Costs(DRAFT), 4)
    assert off.speedup == 1.0 and off.uncertainty == 0.0


def test_a_k0_range_of_a_schedule_is_slower_than_off_for_a_draft_model_and_only_by_the_graphs_for_a_lookup():
    schedule = ((1, 8, 4), (9, 9, 0))
    draft = configurations.speedup_under(schedule, 64, goodput.prior_estimator(RATES, DRAFT), configurations.Costs(DRAFT), 4)
    lookup = configurations.speedup_under(schedule, 64, goodput.prior_estimator(RATES, NGRAM), configurations.Costs(NGRAM), 4)
    graphs = profiles.profile_for(None).graph_cost(64)
    assert draft.k == 0 and draft.speedup < lookup.speedup < 1.0
    assert lookup.speedup == pytest.approx(1 / (1 + graphs))


def test_a_schedule_costs_its_graphs_where_a_fixed_k_does_not():
    estimate = goodput.prior_estimator(RATES, NGRAM)
    fixed = configurations.speedup_under(((1, 1, 4),), 1, estimate, configurations.Costs(NGRAM), 4)
    scheduled = configurations.speedup_under(((1, 8, 4), (9, 9, 0)), 1, estimate, configurations.Costs(NGRAM), 4)
    assert scheduled.speedup < fixed.speedup
    assert fixed.speedup == pytest.approx(estimate(1, 4).speedup)
