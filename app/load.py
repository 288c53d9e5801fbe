"""The load a workload declares: the Locust users that drive it, and the requests that weigh.

The service is verified under its own traffic (`python -m scripts.verify`): a spike of its users
(`run`, `compare`, `soak`) and floods of its heaviest requests (`overload`). Only the workload
knows either, so it declares them beside its routes, as a ``load`` attribute next to
``settings_type`` and ``mount``; the verifier asks the frame's one list of workloads
(``declared_load(app.main.workloads())``) and never imports a workload. Delete the reference
workload and the verifier asks for your users (``--locustfile``) instead of driving routes that
went with it; mount your own with a ``load`` and `make verify` drives it with no flags.

Declaring is optional: a workload without ``load`` is mounted and served all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class BodyShape:
    """A body of ``records`` records, each with ``note_chars`` characters of free text added
    (0: the workload's ordinary records): the size `verify overload` asks a body to be built to,
    as ``--body-cost RECORDS:NOTE_CHARS`` names it."""

    records: int
    note_chars: int = 0

    @classmethod
    def parse(cls, text: str) -> BodyShape:
        """``RECORDS`` or ``RECORDS:NOTE_CHARS``; ValueError otherwise."""
        records, _, note = text.strip().partition(":")
        shape = cls(int(records), int(note) if note else 0)
        if shape.records < 1 or shape.note_chars < 0:
            raise ValueError(text)
        return shape


BodyBuilder = Callable[[BodyShape], bytes]


@dataclass(frozen=True)
class HeavyRequest:
    """A request whose body the service holds while it works on it: what `verify overload`
    floods (with its largest body), measures one body at a time (``--body-cost``) and, where its
    result is stored, reads back slowly (``result_path``)."""

    path: str
    # Valid bodies of a shape; deterministic, and called before any server starts, so building
    # them never competes with the service for the CPU.
    body: BodyBuilder
    largest: BodyShape  # the largest body the route takes whole: what a flood sends
    # Where the result a 2xx reply's JSON "id" names is read back ("/items/{id}"); None: nowhere.
    result_path: str | None = None
    method: str = "POST"
    content_type: str = "application/json"

    def result_of(self, result_id: str) -> str:
        """The path a stored result is read back at; ValueError for a request that stores none."""
        if self.result_path is None:
            raise ValueError(f"{self.method} {self.path} declares no result_path")
        return self.result_path.format(id=result_id)


@dataclass(frozen=True)
class LocustUsers:
    """A Locust file of users with no ``LoadTestShape`` of their own: the verifier runs them
    under its spike-then-idle shape (loadtest/shape.py), `make load` too.

    The options are the file's own Locust arguments: what the verifier's spike and its one-user
    warm-up add to the command line (a spike is heavier than everyday traffic; a warm-up sends
    small bodies), and the option that is given the service's result TTL from its status route.
    The names are Locust's request names the verifier counts: the spike's heavy requests (a run
    where none got through made no spike), and the read-backs of results the users were handed,
    with the name of those the service had lost (the `results lost` column)."""

    file: Path
    about: str = ""  # what the users do, in a few words, for the run's summary
    spike_options: tuple[str, ...] = ()
    warmup_options: tuple[str, ...] = ()
    ttl_option: str | None = None
    heavy_names: tuple[str, ...] = ()
    readback_names: tuple[str, ...] = ()
    lost_name: str | None = None


@dataclass(frozen=True)
class WorkloadLoad:
    """What one workload declares, or what the mounted ones declare together."""

    users: LocustUsers | None = None
    heavy: tuple[HeavyRequest, ...] = ()


@runtime_checkable
class DeclaresLoad(Protocol):
    """A workload that declares its load: ``load`` beside ``settings_type`` and ``mount``."""

    @property
    def load(self) -> WorkloadLoad: ...


class LoadDeclarationError(ValueError):
    """Declarations that cannot be run together; the message says which and what to do."""


def declared_load(workloads: Iterable[object]) -> WorkloadLoad:
    """What ``workloads`` declare together: the heavy requests of each, and the users of the one
    that declares users. A spike is one scenario, so two workloads with users are an error (a
    file of yours can import both sets and declare that one)."""
    declared = [w.load for w in workloads if isinstance(w, DeclaresLoad)]
    with_users = [d.users for d in declared if d.users is not None]
    if len(with_users) > 1:
        files = ", ".join(str(users.file) for users in with_users)
        raise LoadDeclarationError(
            f"{len(with_users)} workloads declare Locust users ({files}): a spike runs one "
            "scenario; declare one file that imports the users you want"
        )
    heavy = tuple(request for d in declared for request in d.heavy)
    return WorkloadLoad(with_users[0] if with_users else None, heavy)
