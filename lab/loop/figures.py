"""The pure side of the loop benchmark: setups from the command line, one run's figures, the
table and the verdict. No I/O here, so all of it is tested without a server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.verify.core.percentile import percentile

TARGET_P99_MS = 50.0
MIN_PROBES = 100  # fewer and a p99 is one or two probes


class SetupError(ValueError):
    """A --setup that cannot be used; the message shows the accepted form."""


@dataclass(frozen=True)
class Setup:
    """A checkout served with its own launcher, plus settings set for it alone."""

    name: str
    checkout: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Setup:
        """``NAME=DIR`` or ``NAME=DIR,VAR=VALUE,...``."""
        head, *rest = text.split(",")
        name, _, folder = head.partition("=")
        if not name.strip() or not folder.strip():
            raise SetupError(f"setup {text!r}: expected NAME=DIR[,VAR=VALUE...]")
        env: dict[str, str] = {}
        for part in rest:
            var, sep, value = part.partition("=")
            if not sep or not var.strip():
                raise SetupError(f"setup {text!r}: {part!r} is not VAR=VALUE")
            env[var.strip()] = value
        return cls(name.strip(), Path(folder.strip()), env)


@dataclass(frozen=True)
class Run:
    """One setup at one load, in one round: the probes' latencies and the load's outcome."""

    setup: str
    round: int
    at_once: int
    latencies_ms: Sequence[float]
    probe_errors: int
    seconds: float
    statuses: dict[str, int]
    load_errors: dict[str, int]

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms)

    def as_dict(self) -> dict[str, object]:
        return {
            "setup": self.setup,
            "round": self.round,
            "at_once": self.at_once,
            "probes": len(self.latencies_ms),
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(self.max_ms, 1),
            "probe_errors": self.probe_errors,
            "seconds": round(self.seconds, 2),
            "statuses": self.statuses,
            "load_errors": self.load_errors,
            # In the order sent, one every interval: when in the load the slow ones came.
            "latencies_ms": [round(v, 1) for v in self.latencies_ms],
        }


def schedule(setups: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, setup) in the order they run: every setup once per round, so A B A B."""
    return [(r, name) for r in range(1, rounds + 1) for name in setups]


COLUMNS = (
    "round",
    "setup",
    "in flight",
    "probes",
    "p50 ms",
    "p99 ms",
    "max ms",
    "probe errors",
    "seconds",
    "statuses",
)


def table(runs: Sequence[Run]) -> str:
    """The runs as a Markdown table, in the order they ran."""
    rows = [
        [
            str(r.round),
            r.setup,
            str(r.at_once),
            str(len(r.latencies_ms)),
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            str(r.probe_errors),
            f"{r.seconds:.2f}",
            " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items())),
        ]
        for r in runs
    ]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def verdict(runs: Sequence[Run], setup: str, at_once: int, target_ms: float) -> list[str]:
    """Why ``setup`` misses the target at ``at_once`` posts in flight; empty when it meets it:
    every run's p99 at most ``target_ms``, enough probes, none failed, every post accepted."""
    mine = [r for r in runs if r.setup == setup and r.at_once == at_once]
    if not mine:
        return [f"{setup}: no run at {at_once} in flight"]
    reasons = []
    for r in mine:
        where = f"{setup}, round {r.round}, {at_once} in flight"
        if len(r.latencies_ms) < MIN_PROBES:
            reasons.append(f"{where}: {len(r.latencies_ms)} probes, fewer than {MIN_PROBES}")
        elif r.p99_ms > target_ms:
            reasons.append(f"{where}: p99 {r.p99_ms:.1f} ms over {target_ms:g} ms")
        if r.probe_errors:
            reasons.append(f"{where}: {r.probe_errors} probe(s) failed")
        if r.load_errors or any(not k.startswith(("2", "503")) for k in r.statuses):
            reasons.append(f"{where}: posts failed {r.statuses} {r.load_errors}")
    return reasons
