"""Reading SpeculativeServing files for the command line: YAML documents, validated as the API server would admit them.

Every problem is an InputError whose message names the file, document and field: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from specserve import api
from specserve.rendering import manifests


class InputError(Exception):
    """A file the command cannot use; the message names the file (and document) and says why. Exit code 2."""


class InvalidServing(ValueError):
    """A YAML document that is not a SpeculativeServing the API server would admit (not a mapping, no usable name)."""


INVALID = (pydantic.ValidationError, manifests.RenderError, InvalidServing)  # what one document can be refused for


@dataclass(frozen=True)
class Document:
    """One SpeculativeServing read from a file, and where it came from (for messages)."""

    where: str  # "FILE: document N"
    serving: api.SpeculativeServing

    @property
    def key(self) -> str:
        meta = self.serving.metadata
        return f"{meta.get('namespace', 'default')}/{meta['name']}"


def load_serving(document: Any) -> api.SpeculativeServing:
    """One YAML document as a SpeculativeServing the API server would admit; raises one of INVALID naming the field."""
    if not isinstance(document, dict):
        raise InvalidServing(f"a SpeculativeServing is a YAML mapping (apiVersion, kind, metadata, spec), not a {type(document).__name__}")
    serving = api.SpeculativeServing.model_validate(document)
    name = serving.metadata.get("name")
    problem = api.name_problem("" if name is None else str(name))
    if problem:
        raise InvalidServing(problem)
    return serving


def load_servings(paths: list[Path], options: manifests.RenderOptions = manifests.RenderOptions()) -> list[Document]:
    """Every SpeculativeServing of every file, in order; InputError naming the file, document and field for the first
    one the API server would not admit or the operator would refuse for a field (the operator's own rule, manifests.check)."""
    documents: list[Document] = []
    for path in paths:
        for number, document in enumerate(load_documents(path), start=1):
            origin = f"{where(path)}: document {number}"
            try:
                loaded = Document(origin, load_serving(document))
            except INVALID as error:
                raise InputError(f"{origin}: {api.describe_error(error)}") from None
            try:
                manifests.check(loaded.serving.spec, manifests.DecisionState(), options)
            except manifests.RenderError as error:
                raise InputError(f"{origin} ({loaded.key}): the operator refuses it ({error.reason}): {error}") from None
            documents.append(loaded)
    return documents


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file ('-' for stdin), empty ones dropped; InputError when there are none or it cannot be read."""
    origin = where(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{origin}: {unreadable(error)}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise InputError(f"{origin}: not valid YAML: {_yaml_problem(error)}") from None
    if not documents:
        raise InputError(f"{origin}: holds no SpeculativeServing (it has no YAML document)")
    return documents


def where(path: Path) -> str:
    return "stdin" if str(path) == "-" else str(path)


def unreadable(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "not a text file (it is not UTF-8)"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory; give a file"
    return f"cannot read it: {error.strerror or error}"


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f" ({error.context})" if error.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}{context}"
    return str(error)
