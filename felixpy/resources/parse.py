"""Text → resources: YAML or JSON, one or many documents, `kind: List` wrappers and YAML list
documents (``- apiVersion: ...`` items, as in Calico's docs), into models.

Every failure is a `ResourceError` saying where (document index, kind, name), what (the
dotted field path, list positions as ``[i]``) and why. Documents are numbered from 1 in
the order their resources appear, items of a List counting one each.

YAML is read as Kubernetes reads it, not as YAML 1.1's every rule: ``80:90`` stays a
string (no base-60 integers) and dates stay strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import ValidationError

from felixpy.resources.base import Resource, ResourceError
from felixpy.resources.fields import FieldError
from felixpy.resources.registry import ALL_KINDS, kind_for
from felixpy.resources.shape import MAX_DEPTH, check_shape

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_DROPPED_TAGS = {_INT_TAG, _FLOAT_TAG, "tag:yaml.org,2002:timestamp"}


class _Loader(yaml.SafeLoader):
    """SafeLoader without base-60 numbers and timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)



def _fast_loader() -> type[Any]:
    """libyaml's parser (events made in C) under PyYAML's own composer and constructor, with the
    resolvers above: about 3 times faster than `_Loader` on large inputs, same documents. Not libyaml's
    composer: it recurses on the C stack, so a deeply nested input could crash the process, where
    PyYAML's composer ends in a RecursionError that `load_yaml` reports. `_Loader` without libyaml."""
    cparser = getattr(getattr(yaml, "cyaml", None), "CParser", None)
    if cparser is None:
        return _Loader
    composer = yaml.composer.Composer

    class FastLoader(cparser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):  # type: ignore[misc, valid-type]
        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            cparser.__init__(self, stream)  # type: ignore[misc]
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            composer.__init__(self)

        check_node = composer.check_node
        get_node = composer.get_node
        get_single_node = composer.get_single_node
        compose_document = composer.compose_document
        compose_node = composer.compose_node
        compose_scalar_node = composer.compose_scalar_node
        compose_sequence_node = composer.compose_sequence_node
        compose_mapping_node = composer.compose_mapping_node

    return FastLoader


_FastLoader = _fast_loader()
_TYPE_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}


def load_yaml(text: str, *, max_documents: int | None = None) -> list[Any]:
    """Every document in ``text`` (YAML or JSON), empty documents dropped. Raises ResourceError.

    Bounded: decoding stops as soon as more than ``max_documents`` resources (items of a List
    counting one each) have been seen, and every document's nesting and alias expansion is
    checked (`felixpy.resources.shape`), so a hostile input costs time and memory in proportion
    to the limits, not to what it claims to hold.
    """
    budget = 4 * len(text) + 10_000
    try:
        return list(_bounded(_decode(text), max_documents, budget))
    except RecursionError:
        raise ResourceError(f"nested more than {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ResourceError(f"invalid YAML{where}: {problem}") from None


def _decode(text: str) -> Iterator[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass  # flow-style YAML also starts with { or [
        else:
            yield from data if isinstance(data, list) else [data]
            return
    for doc in yaml.load_all(text, Loader=_FastLoader):
        if isinstance(doc, list):  # a YAML list document (`- apiVersion: ...`): each item a resource
            yield from (item for item in doc if item is not None)
        elif doc is not None:
            yield doc


def _bounded(docs: Iterator[Any], max_documents: int | None, budget: int) -> Iterator[Any]:
    count = 0
    for index, doc in enumerate(docs, start=1):
        check_shape(doc, max_nodes=budget, index=index)
        count += len(doc["items"] or []) if is_list(doc) and isinstance(doc["items"], list) else 1
        if max_documents is not None and count > max_documents:
            raise ResourceError(
                f"more than {max_documents:,} resources in one input, the limit "
                "(--max-documents or FELIXCTL_MAX_DOCUMENTS); split it into several files"
            )
        yield doc


def is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc


def flatten(docs: list[Any]) -> list[Any]:
    """Expand `kind: List` (and `<Kind>List`) documents into their items."""
    out: list[Any] = []
    for doc in docs:
        if is_list(doc):
            items = doc["items"] or []
            if not isinstance(items, list):
                raise ResourceError("must be a list of resources", field="items", kind=str(doc["kind"]))
            out.extend(items)
        else:
            out.append(doc)
    return out


def parse_documents(text: str, *, max_documents: int | None = None) -> list[Resource]:
    """Parse and validate every resource in ``text``; the first invalid one raises ResourceError."""
    docs = flatten(load_yaml(text, max_documents=max_documents))
    return [parse_document(doc, index=i) for i, doc in enumerate(docs, start=1)]


def parse_document(doc: Any, index: int | None = None) -> Resource:
    """Validate one decoded document (a dict) into its model. Raises ResourceError."""
    if not isinstance(doc, dict):
        raise ResourceError(f"a resource must be a mapping, not {type(doc).__name__}", index=index)
    cls = _kind_of(doc, index)
    meta = doc.get("metadata")
    name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
    try:
        obj = cls.model_validate(doc)
    except ValidationError as exc:
        raise from_validation_error(exc, kind=cls.KIND, name=name, index=index) from None
    except FieldError as exc:  # raised outside pydantic's wrapping (model_post_init)
        raise ResourceError(exc.reason, field=exc.field, kind=cls.KIND, name=name, index=index) from None
    if not obj.metadata.name:
        raise ResourceError("required: every resource needs a name", field="metadata.name", kind=cls.KIND,
                            index=index)
    return obj


def _kind_of(doc: dict[str, Any], index: int | None) -> type[Resource]:
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not kind or not isinstance(kind, str):
        raise ResourceError("required: the resource's kind, e.g. IPPool", field="kind", index=index)
    if not api or not isinstance(api, str):
        raise ResourceError("required, e.g. projectcalico.org/v3", field="apiVersion", kind=kind, index=index)
    cls = kind_for(api, kind)
    if cls is not None:
        return cls
    versions = sorted(k.API_VERSION for k in ALL_KINDS if kind == k.KIND)
    if versions:
        reason = f"'{api}' is not supported for {kind}; use {' or '.join(versions)}"
        raise ResourceError(reason, field="apiVersion", kind=kind, index=index)
    known = ", ".join(sorted({k.KIND for k in ALL_KINDS}))
    raise ResourceError(f"unknown kind '{kind}' (known: {known})", field="kind", kind=kind, index=index)


def from_validation_error(exc: ValidationError, *, kind: str = "", name: str = "",
                          index: int | None = None) -> ResourceError:
    """The first problem pydantic found, as a ResourceError with the field's dotted path."""
    errors = exc.errors()
    first = errors[0]
    field = dotted(list(first["loc"]))
    reason = _reason(first)
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        reason = cause.reason
        if cause.field:
            field = f"{field}.{cause.field}" if field else cause.field
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ResourceError(reason, field=field, kind=kind, name=name, index=index)


def dotted(loc: list[Any]) -> str:
    """('spec', 'ingress', 0, 'action') → 'spec.ingress[0].action'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part and part.endswith("]") and not part.startswith("["):
            continue  # pydantic's validator/union tags, e.g. 'function-after[...]'
        elif part in _TYPE_TAGS:
            continue
        else:
            out += ("." if out else "") + part
    return out


def _reason(error: Any) -> str:
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"must be {error['ctx']['expected']} (got {given!r})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, not {type(given).__name__}"
    if kind == "list_type":
        return f"must be a list, not {type(given).__name__}"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else message
    return f"{message} (got {given!r})" if not isinstance(given, dict | list) else message
