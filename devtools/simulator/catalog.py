"""The route table and per-resource models, derived from the collection.

A route is a row (method, template, kind, resource); its kind follows from where the template
sits under its resource, so adding a request to the collection adds a route without code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from devtools.simulator.collection import API_PREFIX, CollectionRequest, load_requests
from devtools.simulator.resources import PAGE_PARAMS, PAGINATION_KEYS, RESOURCES, ResourceSpec

Record = dict[str, Any]

OAUTH_PATH = "/oauth/token"
# The owner is documented as optional ("when creator_id is null or unspecified, the current
# user is used") even where a template marks it required, and the collection's own Create
# Deal example sends null: requiring it would reject the documented examples.
OWNER_FIELDS = frozenset({"creator_id"})
DEFAULT_OWNER_ID = 1
SERVER_ASSIGNED = frozenset({"id"})


class Kind(StrEnum):
    OAUTH = "oauth"
    INFO = "info"
    LIST = "list"
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UPDATE_OWNER = "update_owner"
    RECORD_EXAMPLE = "record_example"  # the example payload, about one existing record
    EXAMPLE = "example"  # the example payload, as is


# (method, template after the resource path) -> kind. Other "/:param/..." templates are
# RECORD_EXAMPLE (timeline, chat-history, stages, ...), anything else is EXAMPLE.
SUFFIX_KINDS: dict[tuple[str, str], Kind] = {
    ("GET", "/info"): Kind.INFO,
    ("GET", ""): Kind.LIST,
    ("POST", ""): Kind.CREATE,
    ("GET", "/:id"): Kind.READ,
    ("PUT", "/:id"): Kind.UPDATE,
    ("DELETE", "/:id"): Kind.DELETE,
    ("PUT", "/:id/update_owner"): Kind.UPDATE_OWNER,
}


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    kind: Kind
    resource: str | None
    requests: tuple[CollectionRequest, ...]
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))

    @property
    def key(self) -> str:
        """How requests are recorded, in the collection's spelling: ``GET /api/v3.1/x/:id``."""
        return f"{self.method} {self.template}"

    @property
    def example(self) -> Any:
        """The first documented example response of this route."""
        return next((r.example for r in self.requests if r.example is not None), None)

    @property
    def example_body(self) -> Any:
        return next((r.body for r in self.requests if r.body is not None), None)

    @property
    def documented_query(self) -> dict[str, str]:
        """Every query parameter any request of this route documents, with its example value."""
        return {key: value for r in self.requests for key, value in r.query}

    @property
    def id_param(self) -> str | None:
        """The path parameter naming the record this route is about (``id``, ``pipeline_id``)."""
        return next((s[1:] for s in self.segments if s.startswith(":")), None)

    @property
    def answers_with_a_list(self) -> bool:
        """Whether the collection's example answers this route's `response` with an array
        (for one record, Qontak documents "Get Single Contact" that way)."""
        return isinstance(self.example, dict) and isinstance(self.example.get("response"), list)

    @property
    def answers_with_record(self) -> bool:
        """Writes answer with the record only where the collection's example does."""
        return isinstance(self.example, dict) and "response" in self.example

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for mine, theirs in zip(self.segments, segments, strict=True):
            if mine.startswith(":"):
                params[mine[1:]] = theirs
            elif mine != theirs:
                return None
        return params


@dataclass(frozen=True)
class ResourceModel:
    """Per-resource facts read from the collection's examples and templates."""

    spec: ResourceSpec
    seeds: tuple[Record, ...]
    blank: Record
    required: tuple[str, ...]
    pipeline_required: tuple[tuple[str, frozenset[str]], ...]
    pagination_keys: tuple[str, ...]
    text_ids: bool


@dataclass(frozen=True)
class Resolution:
    route: Route | None
    params: dict[str, str]
    allowed: tuple[str, ...]  # methods the path answers to, when route is None


def _blank(value: Any) -> Any:
    """The empty value of a record field, keeping nested objects' keys."""
    if isinstance(value, dict):
        return {key: _blank(item) for key, item in value.items()}
    if isinstance(value, list):
        return []
    return None


def _response_of(route: Route | None) -> Any:
    example = route.example if route else None
    return example.get("response") if isinstance(example, dict) else None


class Catalog:
    """All routes (most specific first) and the models of the resources they serve."""

    def __init__(self, requests: tuple[CollectionRequest, ...]) -> None:
        grouped: dict[str, list[CollectionRequest]] = {}
        for request in requests:
            grouped.setdefault(request.route_key, []).append(request)
        routes = [self._route(group) for group in grouped.values()]
        # Literal segments beat parameters: /tasks/category before /tasks/:id.
        self.routes: tuple[Route, ...] = tuple(
            sorted(routes, key=lambda r: sum(s.startswith(":") for s in r.segments))
        )
        self.models: dict[str, ResourceModel] = {spec.path: self._model(spec) for spec in RESOURCES}

    @property
    def api_routes(self) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.kind is not Kind.OAUTH)

    def route(self, key: str) -> Route:
        return next(r for r in self.routes if r.key == key)

    def resolve(self, method: str, path: str) -> Resolution:
        segments = tuple((path.rstrip("/") or "/").strip("/").split("/"))
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return Resolution(route, params, ())
            allowed.append(route.method)
        return Resolution(None, {}, tuple(dict.fromkeys(allowed)))

    @staticmethod
    def _route(group: list[CollectionRequest]) -> Route:
        first = group[0]
        if first.template == OAUTH_PATH:
            return Route(first.method, first.template, Kind.OAUTH, None, tuple(group))
        if not first.template.startswith(API_PREFIX + "/"):
            raise ValueError(f"{first.route_key} is outside {API_PREFIX}")
        rest = first.template[len(API_PREFIX) + 1 :]
        spec = max(
            (s for s in RESOURCES if rest == s.path or rest.startswith(s.path + "/")),
            key=lambda s: len(s.path),
            default=None,
        )
        if spec is None:
            raise ValueError(f"{first.route_key} belongs to no resource in RESOURCES")
        suffix = rest[len(spec.path) :]
        kind = SUFFIX_KINDS.get((first.method, suffix))
        if kind is None:
            kind = Kind.RECORD_EXAMPLE if suffix.startswith("/:") else Kind.EXAMPLE
        return Route(first.method, first.template, kind, spec.path, tuple(group))

    def _find(self, spec: ResourceSpec, kind: Kind) -> Route | None:
        return next((r for r in self.routes if r.resource == spec.path and r.kind is kind), None)

    def _model(self, spec: ResourceSpec) -> ResourceModel:
        listing = self._find(spec, Kind.LIST)
        seeds = _response_of(listing) or []
        samples = [*seeds[:1], _response_of(self._find(spec, Kind.READ))]
        samples.append(_response_of(self._find(spec, Kind.CREATE)))
        blank: Record = {}
        for sample in samples:
            if isinstance(sample, dict):
                blank.update({k: _blank(v) for k, v in sample.items() if k not in blank})

        template = _response_of(self._find(spec, Kind.INFO)) or []
        required = [f["name"] for f in template if f.get("required") is True]
        create = self._find(spec, Kind.CREATE)
        for request in create.requests if create else ():
            required.extend(request.mandatory_body_fields())
        pipeline_required = tuple(
            (f["name"], frozenset(str(i) for i in f["required_pipeline_ids"]))
            for f in template
            if f.get("required_pipeline_ids") and f["name"] not in OWNER_FIELDS
        )

        pagination: tuple[str, ...] = ()
        if listing is not None:
            example = listing.example if isinstance(listing.example, dict) else {}
            pagination = tuple(k for k in example if k not in ("meta", "response"))
            unknown = [k for k in pagination if k not in PAGINATION_KEYS]
            documented = set(listing.documented_query) - set(PAGE_PARAMS)
            specified = {f.param for f in spec.filters}
            if unknown or documented != specified:
                raise ValueError(
                    f"{spec.path}: pagination keys {unknown} unknown, or documented filters "
                    f"{sorted(documented)} differ from RESOURCES {sorted(specified)}"
                )
        return ResourceModel(
            spec=spec,
            seeds=tuple(seeds),
            blank=blank,
            required=tuple(
                name
                for name in dict.fromkeys(required)
                if name not in OWNER_FIELDS and name not in SERVER_ASSIGNED
            ),
            pipeline_required=pipeline_required,
            pagination_keys=pagination,
            text_ids=any(isinstance(s.get("id"), str) for s in seeds),
        )


@cache
def load_catalog() -> Catalog:
    """The catalog of the shipped collection (built once per process; it is immutable)."""
    return Catalog(load_requests())
