"""The HTTP stacks compared, by name, and the order they run in.

A stack is uvicorn's HTTP parser (``--http``) and event loop (``--loop``). The shipped one is the
edge h11 protocol on asyncio (app/launch.py); the others are what ``uvicorn[standard]`` would
give, and uvloop alone under the same h11 parser, which keeps h11's bound on a request head.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from app.launch import EDGE_PROTOCOL
from scripts.verify.core.errors import RunNotMade


@dataclass(frozen=True)
class Stack:
    name: str
    http: str  # uvicorn --http
    loop: str  # uvicorn --loop
    label: str  # for tables
    needs: tuple[str, ...] = ()  # modules that must be importable

    def check_installed(self) -> None:
        """RunNotMade naming the first module the stack needs and this interpreter lacks."""
        for module in self.needs:
            if importlib.util.find_spec(module) is None:
                raise RunNotMade(f"stack {self.name} needs {module}, which is not installed")


STACKS: dict[str, Stack] = {
    stack.name: stack
    for stack in (
        Stack("h11-asyncio", EDGE_PROTOCOL, "asyncio", "h11 + asyncio (shipped)"),
        Stack(
            "httptools-uvloop", "httptools", "uvloop", "httptools + uvloop", ("httptools", "uvloop")
        ),
        Stack("h11-uvloop", EDGE_PROTOCOL, "uvloop", "h11 + uvloop", ("uvloop",)),
    )
}
DEFAULT_STACKS = "h11-asyncio,httptools-uvloop"
WORKLOADS = ("light", "bulk")


@dataclass(frozen=True)
class Slot:
    """One run's place in the batch: a fresh server of ``stack`` for ``workload``."""

    workload: str
    round: int  # from 1
    stack: str


def schedule(workloads: Sequence[str], rounds: int, stacks: Sequence[str]) -> list[Slot]:
    """Per workload, per round, every stack once: A B A B, so drift over the batch hits each
    stack alike instead of all of one stack's runs."""
    return [
        Slot(workload, number, stack)
        for workload in workloads
        for number in range(1, rounds + 1)
        for stack in stacks
    ]
