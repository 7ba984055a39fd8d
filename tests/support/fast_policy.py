"""A health policy fast enough for tests that watch the loop act, and the bound on how long it may take.

Shared by the kmock integration test, the real-cluster e2e test and bench/reaction_time.py.
"""

from __future__ import annotations

from typing import Any

POLICY: dict[str, Any] = {
    "intervalSeconds": 5,
    "windowSeconds": 30,
    "minDraftTokens": 50,
    "consecutiveBreaches": 2,
    "cooldownSeconds": 10,
    "probationSeconds": 20,
    "maxProbationSeconds": 60,
}
# Bound on the reaction time: the rate window has to turn over (about half of it for the mean to cross),
# then the consecutive breaches, plus one evaluation interval and one poll of slack.
EXPECTED_REACTION = POLICY["windowSeconds"] + POLICY["consecutiveBreaches"] * POLICY["intervalSeconds"] + 2 * POLICY["intervalSeconds"]
