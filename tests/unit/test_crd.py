"""The generated CRD: committed copy is current, schema is structural, CEL rules agree with the models."""

import copy

import celpy
import pydantic
import pytest
import yaml

from specserve import api
from specserve.api import crd
from tests.helpers import CEL_CASES as CASES
from tests.helpers import EXAMPLES, ROOT, apply_defaults, load_example, serving

COMMITTED = ROOT / "crds" / "specserve.dev_speculativeservings.yaml"


def root_schema():
    return crd.custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema, path="$"):
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_models():
    assert COMMITTED.read_text() == crd.crd_yaml(), "crds/ is stale: run `specserve crd > crds/specserve.dev_speculativeservings.yaml`"


def test_crd_names_and_subresources():
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    names = crd.custom_resource_definition()["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("SpeculativeServing", "speculativeservings", ["sps"])
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


def test_printer_columns_show_what_an_sre_needs():
    columns = {c["name"]: c["jsonPath"] for c in crd.PRINTER_COLUMNS}
    assert set(columns) == {"Phase", "Speculation", "Variant", "Schedule", "Acceptance", "P99-TPOT", "Age"}
    assert columns["Schedule"] == ".status.scheduleSummary"


def test_schema_is_structural():
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}
    for path, node in walk(root_schema()):
        assert not forbidden & node.keys(), f"{path} uses {forbidden & node.keys()}"
        assert "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        if "properties" in node:
            assert "additionalProperties" not in node, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_optional_sections_default_to_their_fields_spelled_out():
    spec = root_schema()["properties"]["spec"]["properties"]
    for section in ("gpu", "engine", "healthPolicy", "baseline", "monitoring"):
        assert spec[section]["default"] == apply_defaults(spec[section], {}) != {}, section
    defaulted = apply_defaults(root_schema(), serving())
    assert defaulted["spec"]["healthPolicy"]["disableBelowAcceptance"] == 0.5
    assert defaulted["spec"]["engine"]["image"] == api.DEFAULT_IMAGE


def test_every_cel_rule_compiles():
    env = celpy.Environment()
    rules = [rule for _, node in walk(root_schema()) for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 8
    for rule in rules:
        env.compile(rule["rule"])


def cel_failures(schema, value):
    """Messages of the CEL rules that reject value, evaluated at every level like the API server does."""
    env = celpy.Environment()
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as error:  # the API server refuses a rule that cannot be evaluated
            failures.append(f"{error.args[0]} evaluating rule: {rule['message']}")
            continue
        if not bool(result):
            failures.append(rule["message"])
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in value:
                failures += cel_failures(prop, value[name])
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            failures += cel_failures(schema["items"], item)
    return failures


def defaults_with_rules(schema, path="$"):
    for node_path, node in walk(schema, path):
        if "default" in node:
            yield node_path, node


@pytest.mark.parametrize("path", [p for p, _ in defaults_with_rules(root_schema())], ids=str)
def test_every_default_passes_the_cel_rules_as_written(path):
    """The API server checks a default against the rules before nested defaults apply: no defaulting here."""
    node = dict(defaults_with_rules(root_schema()))[path]
    assert cel_failures(node, node["default"]) == []


def test_a_bare_object_default_would_be_refused_like_the_api_server_refuses_it():
    policy = root_schema()["properties"]["spec"]["properties"]["healthPolicy"]
    assert any("no such member" in f and "windowSeconds must be at least intervalSeconds" in f for f in cel_failures(policy, {}))


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_cel_rules_and_models_agree(case):
    obj = CASES[case]
    cel = cel_failures(root_schema(), apply_defaults(root_schema(), obj))
    try:
        api.SpeculativeServing.model_validate(obj)
        python_rejects = api.name_problem(obj["metadata"]["name"]) is not None
    except pydantic.ValidationError:
        python_rejects = True
    assert bool(cel) == python_rejects, cel
    assert (case == "valid ngram" or case == "eagle3 with draft") == (not cel)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_every_cel_rule(path):
    assert cel_failures(root_schema(), apply_defaults(root_schema(), load_example(path))) == []


def test_crd_yaml_round_trips():
    assert yaml.safe_load(crd.crd_yaml()) == crd.custom_resource_definition()
