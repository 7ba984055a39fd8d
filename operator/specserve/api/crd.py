"""Generates the SpeculativeServing CustomResourceDefinition from the pydantic models.

Turns pydantic's JSON Schema into a structural OpenAPI v3 schema with defaults and CEL rules.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from specserve import api

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Speculation", "type": "string", "jsonPath": ".status.speculation"},
    {"name": "Variant", "type": "string", "jsonPath": ".status.activeVariant"},
    {"name": "Schedule", "type": "string", "jsonPath": ".status.scheduleSummary", "description": "k by batch size in force, e.g. k4<=31,0"},
    {"name": "Acceptance", "type": "number", "format": "float", "jsonPath": ".status.observation.acceptanceRate"},
    {"name": "P99-TPOT", "type": "number", "format": "float", "jsonPath": ".status.observation.p99TpotSeconds", "description": "P99 time per output token, seconds"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def openapi_schema(model: type[api.Model]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of a model, with its rules and those of every nested model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _complete_defaults(_structural(raw, raw.get("$defs", {}), _rules_by_title(model)))


def fill_defaults(schema: dict[str, Any], value: Any) -> Any:
    """value with the schema's defaults filled in, at every depth, the way the API server defaults an object."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = fill_defaults(prop, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [fill_defaults(schema["items"], item) for item in value]
    return value


def _complete_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Spell out every object default with its nested defaults filled in.

    The API server checks a default against the schema and its CEL rules as written, before nested defaults
    apply: `default: {}` on a section whose rules read its fields is refused ("no such key").
    """
    for prop in schema.get("properties", {}).values():
        _complete_defaults(prop)
    if isinstance(schema.get("items"), dict):
        _complete_defaults(schema["items"])
    if isinstance(schema.get("default"), dict):
        schema["default"] = fill_defaults(schema, schema["default"])
    return schema


def _rules_by_title(model: type[api.Model]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    pending = [model]
    while pending:
        current = pending.pop()
        if current.__name__ in found:
            continue
        found[current.__name__] = [{"rule": r.cel, "message": r.message, **({"fieldPath": r.field} if r.field else {})} for r in current.rules]
        for field in current.model_fields.values():
            pending.extend(_nested_models(field.annotation))
    return found


def _nested_models(annotation: Any) -> list[type[api.Model]]:
    if isinstance(annotation, type) and issubclass(annotation, api.Model):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _nested_models(arg)]


def _structural(node: Any, defs: dict[str, Any], rules: dict[str, list[dict[str, str]]]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs, rules) for item in node]
    if not isinstance(node, dict):
        return node
    node = _drop_null_branch(dict(node))
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update(node)  # field-level description/default win over the definition's
        node = target
    if "anyOf" in node and _is_int_or_string(node["anyOf"]):
        node.pop("anyOf")
        node["x-kubernetes-int-or-string"] = True
    title = node.get("title")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs, rules) for name, prop in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = _structural(value, defs, rules)
        elif key == "maxLength" and node.get("type") == "object":
            out["maxProperties"] = value
        else:
            out[key] = _structural(value, defs, rules)
    if out.get("x-kubernetes-preserve-unknown-fields") or "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)
    if title in rules and rules[title] and "properties" in out:
        out["x-kubernetes-validations"] = rules[title]
    return out


def _drop_null_branch(node: dict[str, Any]) -> dict[str, Any]:
    options = node.get("anyOf")
    if not options:
        return node
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) == len(options):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


def _is_int_or_string(options: list[dict[str, Any]]) -> bool:
    return sorted(o.get("type", "") for o in options) == ["integer", "string"]


def custom_resource_definition() -> dict[str, Any]:
    """The complete CRD manifest."""
    spec_schema = openapi_schema(api.SpeculativeServingSpec)
    status_schema = openapi_schema(api.SpeculativeServingStatus)
    root = {
        "type": "object",
        "description": "A vLLM deployment with speculative decoding that specserve keeps healthy.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {"rule": f"self.metadata.name.size() <= {api.MAX_NAME_LENGTH}", "message": api.name_problem("x" * (api.MAX_NAME_LENGTH + 1))},
            {"rule": f"self.metadata.name.matches('{api.NAME_PATTERN}')", "message": api.name_problem("0")},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["all", "specserve"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd_yaml() -> str:
    return yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=120)
