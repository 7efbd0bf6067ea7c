"""Common pieces of every resource: metadata, the base model, and the validation error.

Python attributes are snake_case; the YAML/JSON names are Calico's camelCase (aliases).
Models are built with ``populate_by_name`` so code may use either spelling, and dumped
``by_alias`` so what is stored and printed is exactly what a Calico user writes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ResourceError(ValueError):
    """A resource document is invalid. ``field`` is the dotted path of the offending field."""

    def __init__(self, message: str, *, field: str = "", kind: str = "", name: str = "", index: int | None = None):
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
    )


class ObjectMeta(Model):
    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    uid: str | None = None
    creation_timestamp: str | None = None
    generation: int | None = None


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
        """The wire form (camelCase, no None values)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
