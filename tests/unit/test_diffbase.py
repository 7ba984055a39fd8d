"""controller.LeanDiffBaseStorage: Kopf's last-handled configuration, the same essence for less copying."""

from __future__ import annotations

import copy

import kopf

from specserve import api
from specserve.controller import LeanDiffBaseStorage
from tests.helpers import serving


def watched_serving() -> dict:
    body = serving(name="llama", gpu={"count": 1, "product": "L40S"})
    body["metadata"].update(
        namespace="team", uid="u-1", resourceVersion="42", generation=3, labels={"team": "ml"},
        annotations={"owner": "ml-platform", "specserve.dev/last-handled-configuration": '{"spec":{}}\n', "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        managedFields=[{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {"f:target": {}}}}],
    )
    body["status"] = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}], "health": {"buckets": [{"lo": 1, "k": 4}]}}
    return body


def kopfs(**kwargs) -> kopf.AnnotationsDiffBaseStorage:
    return kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP, key="last-handled-configuration", **kwargs)


def lean(**kwargs) -> LeanDiffBaseStorage:
    return LeanDiffBaseStorage(prefix=api.GROUP, key="last-handled-configuration", **kwargs)


def test_the_essence_is_the_one_kopf_builds():
    body = kopf.Body(watched_serving())
    assert lean().build(body=body) == kopfs().build(body=body)


def test_the_essence_keeps_the_spec_labels_and_own_annotations_only():
    essence = lean().build(body=kopf.Body(watched_serving()))
    assert set(essence) == {"spec", "metadata"} and essence["metadata"] == {"labels": {"team": "ml"}, "annotations": {"owner": "ml-platform"}}


def test_the_essence_is_a_copy_the_body_cannot_change_later():
    raw = watched_serving()
    essence = lean().build(body=kopf.Body(raw))
    before = copy.deepcopy(essence)
    raw["spec"]["target"]["model"] = "changed"
    raw["metadata"]["labels"]["team"] = "changed"
    assert essence == before


def test_extra_fields_are_picked_as_kopf_picks_them():
    body = kopf.Body(watched_serving())
    assert lean().build(body=body, extra_fields=["status.phase"]) == kopfs().build(body=body, extra_fields=["status.phase"])
