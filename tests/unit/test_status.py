"""Status bookkeeping: conditions, availability, decision state read back from status, drift detection."""

from specserve import api
from specserve.api.conditions import condition, merge_conditions
from specserve.cluster import availability, drift, lifecycle, reconcile, servings
from specserve.rendering import manifests
from tests.helpers import minimal_spec

SPEC = api.SpeculativeServingSpec.model_validate(minimal_spec())
LADDER = api.SpeculativeServingSpec.model_validate(
    minimal_spec(target={"model": "o/m", "variants": [{"name": "int4", "model": "o/m4"}, {"name": "bf16", "model": "o/m"}]})
)


def deployment(name="demo", replicas=1, available=1, updated=1, generation=1, observed=1, progressing=("True", "NewReplicaSetAvailable"), failure=None):
    """A Deployment status in the shape the Deployment controller writes."""
    conditions = [{"type": "Available", "status": "True" if available >= replicas else "False", "reason": "MinimumReplicasAvailable"}]
    if progressing:
        conditions.append({"type": "Progressing", "status": progressing[0], "reason": progressing[1], "message": "ReplicaSet \"demo-1\" ..."})
    if failure:
        conditions.append({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": failure})
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": replicas},
        "status": {"availableReplicas": available, "updatedReplicas": updated, "replicas": replicas, "observedGeneration": observed, "conditions": conditions},
    }


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def test_ready_when_every_deployment_is_available():
    status = availability.serving_status({}, [deployment(), deployment("demo-baseline")], 3, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Ready" and status["observedGeneration"] == 3
    assert conditions(status)["Ready"]["status"] == "True"
    assert conditions(status)["Progressing"]["status"] == "False"


def test_progressing_while_a_rollout_is_under_way():
    status = availability.serving_status({}, [deployment(available=0, updated=0, generation=2, observed=1)], 2, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Progressing"
    assert conditions(status)["Ready"]["status"] == "False"


def test_a_new_deployment_whose_pods_are_loading_is_progressing_not_degraded():
    loading = deployment(available=0, updated=1, progressing=("True", "NewReplicaSetCreated"))
    status = availability.serving_status({}, [loading], 1, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Progressing"
    assert conditions(status)["Progressing"]["status"] == "True" and conditions(status)["Ready"]["reason"] == "RollingOut"


def test_a_deployment_the_controller_has_not_yet_seen_is_progressing():
    status = availability.serving_status({}, [deployment(available=0, updated=0, observed=0, progressing=None)], 1, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Progressing"


def test_degraded_when_the_progress_deadline_is_exceeded():
    stuck = deployment(available=0, progressing=("False", "ProgressDeadlineExceeded"))
    status = availability.serving_status({}, [stuck], 1, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Degraded"
    assert conditions(status)["Ready"]["reason"] == "ProgressDeadlineExceeded" and conditions(status)["Progressing"]["status"] == "False"


def test_degraded_when_pods_cannot_be_created():
    status = availability.serving_status({}, [deployment(available=0, progressing=("True", "ReplicaSetUpdated"), failure="pods exceed quota")], 1, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Degraded" and "exceed quota" in conditions(status)["Ready"]["message"]


def test_degraded_when_availability_is_lost_after_the_rollout_completed():
    status = availability.serving_status({}, [deployment(replicas=2, available=1, updated=2)], 1, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Degraded" and conditions(status)["Ready"]["reason"] == "LostAvailability"


def test_scaling_down_is_progressing():
    shrinking = deployment(replicas=1, available=1, updated=1)
    shrinking["status"]["replicas"] = 2
    status = availability.serving_status({}, [shrinking], 1, [], manifests.DecisionState(), SPEC)
    assert status["phase"] == "Progressing"


def test_no_deployments_yet_is_pending():
    assert availability.serving_status({}, [], 1, [], manifests.DecisionState(), SPEC)["phase"] == "Pending"


def test_effective_state_is_reported():
    status = availability.serving_status({}, [deployment()], 1, [], manifests.DecisionState(speculation=False, variant="bf16"), LADDER)
    assert (status["speculation"], status["activeVariant"], status["effectiveNumSpeculativeTokens"]) == ("Off", "bf16", 0)


def test_transition_time_moves_only_when_the_status_value_changes():
    old = [{"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    same = merge_conditions(old, [condition("Ready", "True", "Available", "x", 2)])
    flipped = merge_conditions(old, [condition("Ready", "False", "NotAvailable", "x", 2)])
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert flipped[0]["lastTransitionTime"] != "2026-01-01T00:00:00Z"


def test_decision_state_is_read_back_from_status():
    state = servings.decision_state(LADDER, {"speculation": "Off", "activeVariant": "bf16"})
    assert state == manifests.DecisionState(speculation=False, variant="bf16")


def test_a_variant_removed_from_the_spec_falls_back_to_the_spec():
    assert servings.decision_state(LADDER, {"activeVariant": "fp4"}).variant == "int4"


def test_a_changed_spec_active_variant_overrides_the_last_decision():
    status = {"activeVariant": "bf16", "health": {"specActiveVariant": "int4"}}
    changed = LADDER.model_copy(update={"target": LADDER.target.model_copy(update={"active_variant": "bf16"})})
    assert servings.decision_state(LADDER, status).variant == "bf16"
    moved = {"activeVariant": "int4", "health": {"specActiveVariant": "int4"}}
    assert servings.decision_state(changed, moved).variant == "bf16"


def test_fresh_status_means_speculation_on():
    assert servings.decision_state(SPEC, {}) == manifests.DecisionState()


def test_canonicalised_quantities_are_not_drift():
    assert drift.is_subset({"sizeLimit": "16384Mi", "cpu": "0.5"}, {"sizeLimit": "16Gi", "cpu": "500m"})
    assert not drift.is_subset({"sizeLimit": "8Gi"}, {"sizeLimit": "16Gi"})


def test_status_change_ignores_transition_times_and_untouched_health_fields():
    old = {"phase": "Ready", "conditions": [condition("Ready", "True", "Available", "a: 1/1 available", 1)], "health": {"specActiveVariant": "x", "consecutiveBreaches": 2}}
    same = {"phase": "Ready", "conditions": [condition("Ready", "True", "Available", "a: 1/1 available", 1)], "health": {"specActiveVariant": "x"}}
    assert not availability.status_changed(old, same)
    assert availability.status_changed(old, {**same, "phase": "Degraded"})


def test_server_defaults_are_not_drift():
    wanted = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": ["a"]}]}}}}
    live = {"spec": {"progressDeadlineSeconds": 600, "template": {"spec": {"dnsPolicy": "ClusterFirst", "containers": [{"name": "vllm", "args": ["a"], "imagePullPolicy": "IfNotPresent"}]}}}}
    assert drift.is_subset(wanted, live)


def test_empty_values_the_api_server_drops_are_not_drift():
    wanted = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "resources": {"requests": {}, "limits": {}}, "env": [], "stdin": False}]}}}}
    live = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "resources": {}}]}}}}
    assert drift.is_subset(wanted, live)


def test_a_missing_value_that_is_not_empty_is_drift():
    wanted = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}
    live = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "resources": {}}]}}}}
    assert not drift.is_subset(wanted, live)


def test_a_changed_argument_is_drift():
    wanted = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": ["a", "b"]}]}}}}
    live = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": ["a"]}]}}}}
    assert not drift.is_subset(wanted, live)


def test_only_a_judged_generation_counts_as_refused():
    def serving(status, observed, generation=2):
        return {"metadata": {"generation": generation}, "status": {"conditions": [condition("Accepted", status, "X", "", observed)]}}

    assert servings.refused(serving("False", 2))
    assert not servings.refused(serving("False", 1))  # a newer spec, not judged yet
    assert not servings.refused(serving("True", 2))
    assert not servings.refused({"metadata": {"generation": 1}, "status": {}})


def test_a_variant_the_spec_dropped_is_named_with_what_is_served_instead():
    message = reconcile.forgotten_variant(LADDER, {"activeVariant": "fp8"})
    assert "'fp8'" in message and "int4, bf16" in message and "serving variant 'int4'" in message


def test_a_declared_or_absent_active_variant_is_not_forgotten():
    assert reconcile.forgotten_variant(LADDER, {"activeVariant": "bf16"}) is None
    assert reconcile.forgotten_variant(LADDER, {}) is None


def test_dropping_every_variant_falls_back_to_the_target_model():
    assert "serving spec.target.model" in reconcile.forgotten_variant(SPEC, {"activeVariant": "bf16"})


def test_an_earlier_started_replica_has_the_higher_peering_priority():
    assert lifecycle.seniority_priority(1000.0, 999) > lifecycle.seniority_priority(1000.001, 0)
    assert lifecycle.seniority_priority(1000.0, 1) != lifecycle.seniority_priority(1000.0, 2)


def _deployment(name, generation, available):
    return {"kind": "Deployment", "metadata": {"name": name, "generation": generation}, "status": {"availableReplicas": available}}


def test_a_watched_deployment_of_the_same_generation_beats_the_applys_answer():
    watched, written = [_deployment("a", 1, 1)], [_deployment("a", 1, 0)]
    assert reconcile.newest_deployments(watched, written) == watched


def test_a_newer_generation_just_applied_beats_the_watch():
    watched, written = [_deployment("a", 1, 1)], [_deployment("a", 2, 0)]
    assert reconcile.newest_deployments(watched, written) == written


def test_a_deployment_the_watch_has_not_seen_yet_is_taken_from_the_apply():
    assert reconcile.newest_deployments([], [_deployment("a", 1, 0)]) == [_deployment("a", 1, 0)]
