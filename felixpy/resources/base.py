"""Common pieces of every resource: metadata, the base model, and the validation error.

Python attributes are snake_case; the YAML/JSON names are Calico's camelCase (aliases).
Models are built with ``populate_by_name`` so code may use either spelling, and dumped
``by_alias`` so what is stored and printed is exactly what a Calico user writes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from felixpy.resources.fields import FieldError
from felixpy.resources.name_rules import check_annotation_keys, check_dns_label, check_labels, check_subdomain


class ResourceError(ValueError):
    """A resource document is invalid. ``field`` is the dotted path of the offending field."""

    def __init__(
        self, message: str, *, field: str = "", kind: str = "", name: str = "", index: int | None = None
    ):
        self.field = field
        self.kind = kind
        self.name = name
        self.index = index
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.index is not None:
            where.append(f"document {self.index}")
        if self.kind:
            where.append(self.kind + (f" '{self.name}'" if self.name else ""))
        prefix = ", ".join(where)
        field = f"field '{self.field}': " if self.field else ""
        return f"{prefix + ': ' if prefix else ''}{field}{self.reason}"

    def located(self, *, index: int | None = None, kind: str = "", name: str = "") -> ResourceError:
        return ResourceError(
            self.reason,
            field=self.field,
            kind=kind or self.kind,
            name=name or self.name,
            index=self.index if index is None else index,
        )


class Model(BaseModel):
    """Base for every spec/sub-object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
        frozen=False,
        defer_build=True,
    )


# Namespace names already found valid (every stored endpoint carries one; a bad one is refused each time).
_VALID_NAMESPACES: set[str] = set()
VALID_NAMESPACES_MAX = 4096


class ObjectMeta(Model):
    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    uid: str | None = None
    creation_timestamp: str | None = None
    generation: int | None = None

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value not in _VALID_NAMESPACES:  # (a pure check: a cluster's few namespaces, checked once)
            check_dns_label(value, what="namespace")
            if len(_VALID_NAMESPACES) >= VALID_NAMESPACES_MAX:
                _VALID_NAMESPACES.clear()
            _VALID_NAMESPACES.add(value)
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        return check_annotation_keys(value)


class Resource(Model):
    """A top-level resource. Subclasses set KIND, PLURAL, SHORT_NAMES, NAMESPACED, API_VERSION."""

    API_VERSION: ClassVar[str] = "projectcalico.org/v3"
    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    NAMESPACED: ClassVar[bool] = False

    api_version: str = Field(default="", alias="apiVersion")
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    def model_post_init(self, __context: Any) -> None:
        if not self.api_version:
            self.api_version = self.API_VERSION
        if not self.kind:
            self.kind = self.KIND

    @classmethod
    def check_name(cls, name: str) -> None:
        """Raise FieldError if ``name`` is not a valid name for this kind (DNS-1123 subdomain by default)."""
        check_subdomain(name)

    @model_validator(mode="after")
    def _metadata(self) -> Resource:
        if self.metadata.name:
            try:
                self.check_name(self.metadata.name)
            except FieldError as exc:
                raise FieldError(exc.reason, field="metadata.name") from None
        if self.metadata.namespace is not None and not self.NAMESPACED:
            raise FieldError(f"{self.KIND} is not namespaced; remove it", field="metadata.namespace")
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def revision(self) -> str | None:
        return self.metadata.resource_version

    def to_dict(self) -> dict[str, Any]:
        """The wire form (camelCase, no None values, no empty labels/annotations maps)."""
        out = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        meta = out.get("metadata", {})
        for key in ("labels", "annotations"):
            if not meta.get(key):
                meta.pop(key, None)
        return out
