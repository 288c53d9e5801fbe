"""The frame a workload is mounted into: what the service gives it, and what it declares back.

The service itself is a frame: health, metrics, the memory manager and its status route, the
budget, the edge. Everything a workload adds (routes, settings, caches, the memory cost of its
routes, metrics, a section of /debug/memory) comes in through ``Workload.mount(frame)``, the one
line app/main.py has for it; nothing in the frame names a workload's routes. The frame is stored
once on the app, typed, and read back by ``frame_of`` (a FastAPI dependency).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from pydantic_settings import BaseSettings

from app.config import Settings
from app.memory import MemoryManager, RouteCost
from app.memory.status_route import StatusSource

StartupStep = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Admitted:
    """Routes whose requests reserve memory before their body is read (admission control)."""

    routes: tuple[RouteCost, ...]
    max_body_bytes: int  # the largest body they take: it must fit the in-flight budget
    limit_name: str  # the setting behind max_body_bytes, named in a 413 and at startup


@dataclass(frozen=True)
class Held:
    """Long-lived memory a workload keeps (a cache's bound): a fixed part of each budget."""

    nbytes: int
    setting: str  # the setting that bounds it, named when the budget does not fit


@dataclass
class Frame:
    app: FastAPI
    settings: Settings  # the frame's: WEB_CONCURRENCY, the limit, ...
    memory: MemoryManager
    registry: CollectorRegistry  # what /metrics serves: register collectors here
    admitted: list[Admitted] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    startup: list[StartupStep] = field(default_factory=list)

    def admit(self, routes: Sequence[RouteCost], *, max_body_bytes: int, limit_name: str) -> None:
        """Put admission control in front of ``routes``; each reserves its body size times its
        cost factor from the in-flight budget before the body is read."""
        self.admitted.append(Admitted(tuple(routes), max_body_bytes, limit_name))

    def hold(self, nbytes: int, setting: str) -> None:
        """Declare long-lived memory (per worker): the budget sets it aside before in-flight."""
        self.held.append(Held(nbytes, setting))

    def on_startup(self, step: StartupStep) -> None:
        """Run ``step`` in the app's lifespan, before startup objects are frozen and before the
        cleanup loop starts."""
        self.startup.append(step)

    def add_status(self, name: str, read: StatusSource) -> None:
        """Show ``read()`` in /debug/memory under ``name`` (called off the event loop)."""
        self.memory.add_status_source(name, read)


class Workload(Protocol):
    """What app/main.py mounts: a settings class (checked at launch, typos warned about) and a
    ``mount`` that adds the workload's routes and declarations to the frame.

    A workload may also declare its load, ``load: app.load.WorkloadLoad`` (its Locust users,
    its heavy requests): optional, so it is no member here; the verifier reads it through
    ``app.load.declared_load(app.main.workloads())`` and drives whatever is mounted."""

    @property
    def settings_type(self) -> type[BaseSettings]: ...

    def mount(self, frame: Frame) -> None: ...


def frame_of(request: Request) -> Frame:
    """The frame of the app serving ``request``, typed."""
    found = request.app.state.frame
    if not isinstance(found, Frame):
        raise RuntimeError("the app was not built by app.main.build_app")
    return found


async def current_frame(request: Request) -> Frame:
    """``frame_of`` as a dependency; `async` because FastAPI runs a plain `def` dependency in
    the threadpool, a thread hop per request."""
    return frame_of(request)


FrameDep = Annotated[Frame, Depends(current_frame)]
