"""The step cost fitted to one serving's measurements, and how far a fit carries to another k or batch size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specserve.decision import fitting, goodput
from specserve.decision.acceptance import per_position_for_token_acceptance
from specserve.decision.calibration import ModelSize
from specserve.decision.proposers import proposer_for

DRAFT = proposer_for("draft_model")
LLAMA_70B_8B = proposer_for("draft_model", ModelSize(70.6, 80, 2), ModelSize(8.03, 32, 2))
RATES = per_position_for_token_acceptance(0.8, 4)


def test_a_fit_reproduces_the_speedup_it_was_fitted_to():
    found = fitting.fit(1.5, 4, 4, RATES, LLAMA_70B_8B, 0.05)
    assert found is not None
    assert fitting.predict(found, 4, 4, RATES, LLAMA_70B_8B).speedup == pytest.approx(1.5)


def test_a_measurement_at_the_prior_fits_a_scale_of_one():
    prior = goodput.speedup(8, 2, RATES, DRAFT).speedup
    found = fitting.fit(prior, 2, 8, RATES, DRAFT, 0.05)
    assert found is not None and found.cost_scale == pytest.approx(1.0)


@given(st.floats(0.3, 3.0), st.floats(0.3, 3.0), st.integers(1, 6))
def test_a_serving_measured_faster_is_predicted_faster_at_every_other_k(slow, fast, k):
    slower, faster = sorted((slow, fast))
    a, b = fitting.fit(slower, 4, 8, RATES, DRAFT, 0.05), fitting.fit(faster, 4, 8, RATES, DRAFT, 0.05)
    assert a is not None and b is not None
    assert fitting.predict(a, 8, k, RATES, DRAFT).speedup <= fitting.predict(b, 8, k, RATES, DRAFT).speedup + 1e-9


def test_a_prediction_at_another_k_is_fitted_and_doubtful_and_at_k0_certain():
    found = fitting.fit(1.5, 4, 4, RATES, LLAMA_70B_8B, 0.05)
    assert found is not None
    other = fitting.predict(found, 4, 2, RATES, LLAMA_70B_8B)
    assert other.evidence == "fitted" and other.uncertainty is not None and other.uncertainty > 0.1
    off = fitting.predict(found, 4, 0, RATES, LLAMA_70B_8B)
    assert off.speedup == 1.0 and off.uncertainty == 0.0


def test_how_far_a_fit_carries_comes_from_the_gpu_points_and_grows_with_distance():
    per_k, per_octave = fitting.measured_transfer()
    assert 0.05 < per_k < 0.5 and 0.05 < per_octave < 0.5
    assert fitting.transfer_spread(1, 0) < fitting.transfer_spread(2, 0) < fitting.transfer_spread(2, 3)


def test_nothing_is_fitted_at_k0():
    assert fitting.fit(0.9, 0, 100, RATES, DRAFT, 0.05) is None
