"""The status route's JSON document as types: what ``MemoryStatus.as_dict()`` returns, checked
against the dataclasses that build it, and what a reader of a deployed service's route (the
verifier) reads back.

Only the sections a reader relies on are spelled out to the last key; the others stay mappings.
A service adds sections of its own (``add_status_source``: its cache, its profile); they are not
in these types and are read with ``section()``. Keys may be added, never renamed (status.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast


class CgroupDocument(TypedDict):
    version: int
    limit_bytes: int | None
    usage_bytes: int | None
    working_set_bytes: int | None
    peak_bytes: int | None


class AllocatorDocument(TypedDict):
    name: str
    library: str | None
    release_method: str
    options: dict[str, str]
    heap: dict[str, object] | None


class InterpreterDocument(TypedDict):
    version: str
    free_threaded: bool
    object_allocator: str
    object_allocator_settings: dict[str, str]
    release_reaches_python_objects: bool


class CleanupDocument(TypedDict):
    enabled: bool
    running: bool
    interval_seconds: float
    threshold_bytes: int
    idle_release_seconds: float
    release_min_bytes: int
    runs: int
    failures: int
    requests_seen: int


class SiteDocument(TypedDict):
    where: str
    size_bytes: int
    blocks: int


class HoldingsDocument(TypedDict):
    anonymous_bytes: int | None
    file_bytes: int | None
    live_objects_bytes: int | None
    allocator_free_bytes: int | None
    object_allocator: str  # pymalloc, mimalloc (CPython's) or malloc: what pymalloc_* describe
    pymalloc_arenas_bytes: int | None
    pymalloc_free_bytes: int | None
    malloc_in_use_bytes: int | None
    malloc_free_bytes: int | None
    gc_objects: int
    traced_bytes: int | None
    top_sites: list[SiteDocument]


class StatusDocument(TypedDict):
    pid: int
    rss_bytes: int | None
    uss_bytes: int | None
    pss_bytes: int | None
    replica_id: str | None
    limit_mb: float
    cgroup: CgroupDocument | None
    allocator: AllocatorDocument
    interpreter: InterpreterDocument
    budget: dict[str, int] | None
    admission: dict[str, object] | None
    outbound: dict[str, object]
    breakdown: list[dict[str, int | str]] | None
    releases: list[dict[str, object]]
    release_totals: dict[str, object]
    cleanup: CleanupDocument
    cgroup_note: str | None
    holdings: HoldingsDocument | None
    holdings_advice: str | None
    door: NotRequired[dict[str, int] | None]  # added 2026-12: older copies' documents lack it


class NotAStatus(ValueError):
    """A JSON document that is not the memory package's status; the message says what is off."""


def read_status(raw: object) -> StatusDocument:
    """A parsed JSON document as the status, once it has what every reader uses: a pid, the
    allocator, the cleanup loop's settings. Raises NotAStatus otherwise."""
    if not isinstance(raw, dict):
        raise NotAStatus(f"a JSON {type(raw).__name__}, not an object")
    for key, kind in (("pid", int), ("allocator", dict), ("cleanup", dict)):
        if not isinstance(raw.get(key), kind):
            raise NotAStatus(f"no {key!r} (the memory package's status has one)")
    return cast(StatusDocument, raw)


def added(document: StatusDocument | None, name: str) -> object:
    """What the service added under ``name`` (``add_status_source``), or None."""
    return cast(Mapping[str, object], document or {}).get(name)


def section(document: StatusDocument | None, name: str) -> Mapping[str, Any]:
    """A section the service added as a mapping, or an empty one."""
    value = added(document, name)
    return value if isinstance(value, Mapping) else {}
