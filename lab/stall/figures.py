"""The event-loop stall figures and their verdict: /healthz latency with and without releases.

Pure arithmetic on latencies already measured, so it is tested on fixed inputs. The claim
judged: a release never stalls the event loop, i.e. the p99 of /healthz while releases run back
to back stays within ``target_ms`` of its p99 with no release at all, in the same process.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from app.memory.measure import MB
from scripts.verify.core.percentile import percentile

TARGET_MS = 5.0
# Fewer probes than this and a p99 is one or two readings: too few to judge.
MIN_PROBES = 100

QUIET = "no releases"
OFF_LOOP = "releases off the loop"
ON_LOOP = "releases on the loop"


class NotJudgeable(ValueError):
    """The measurement lacks what the verdict needs (probes, releases): the run was not made."""


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds of /healthz over one condition, counted from each probe's due time;
    ``service_p99_ms`` counts from its send instead; ``errors``: probes without a 200."""

    probes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int = 0
    service_p99_ms: float | None = None


def summarize(
    latencies_s: Sequence[float], errors: int = 0, service_s: Sequence[float] = ()
) -> LatencySummary:
    """Seconds in, milliseconds out; NotJudgeable with fewer than MIN_PROBES answers."""
    if len(latencies_s) < MIN_PROBES:
        raise NotJudgeable(f"{len(latencies_s)} /healthz answers, fewer than {MIN_PROBES}")
    ms = [v * 1000 for v in latencies_s]
    return LatencySummary(
        probes=len(ms),
        p50_ms=percentile(ms, 0.5),
        p99_ms=percentile(ms, 0.99),
        max_ms=max(ms),
        errors=errors,
        service_p99_ms=percentile([v * 1000 for v in service_s], 0.99) if service_s else None,
    )


@dataclass(frozen=True)
class ReleaseSummary:
    """The releases made during a condition: how many, their median duration as the service
    measured it, and what the first one freed (it finds the heap just grown)."""

    count: int
    median_ms: float | None
    first_freed_mb: float | None


def summarize_releases(durations_s: Sequence[float], freed_bytes: Sequence[int]) -> ReleaseSummary:
    return ReleaseSummary(
        count=len(durations_s),
        median_ms=statistics.median(durations_s) * 1000 if durations_s else None,
        first_freed_mb=freed_bytes[0] / MB if freed_bytes else None,
    )


@dataclass(frozen=True)
class Condition:
    name: str  # QUIET, OFF_LOOP or ON_LOOP
    latency: LatencySummary
    releases: ReleaseSummary
    rss_mb: float | None = None  # the server's RSS once the heap was grown, before probing


@dataclass(frozen=True)
class StallVerdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StallResult:
    """One profile: the quiet condition, releases off the loop, and (for contrast, unjudged)
    releases on the loop as the seed guide ran them."""

    profile: str
    quiet: Condition
    off_loop: Condition
    on_loop: Condition | None = None

    @property
    def p99_delta_ms(self) -> float:
        return self.off_loop.latency.p99_ms - self.quiet.latency.p99_ms

    def delta_of(self, condition: Condition) -> float | None:
        if condition is self.quiet:
            return None
        return condition.latency.p99_ms - self.quiet.latency.p99_ms

    @property
    def conditions(self) -> list[Condition]:
        return [c for c in (self.quiet, self.off_loop, self.on_loop) if c is not None]

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "p99_delta_ms": self.p99_delta_ms,
            "conditions": [asdict(c) for c in self.conditions],
        }


def judge(result: StallResult, target_ms: float = TARGET_MS) -> StallVerdict:
    """Pass when the p99 with releases running is within ``target_ms`` of the quiet p99 and
    every probe was answered. NotJudgeable when no release ran while the probes did."""
    if result.off_loop.releases.count == 0:
        raise NotJudgeable("no release completed while /healthz was probed")
    if result.quiet.releases.count:
        raise NotJudgeable(
            f"{result.quiet.releases.count} release(s) ran during the no-release condition"
        )
    reasons = []
    delta = result.p99_delta_ms
    if delta > target_ms:
        reasons.append(
            f"p99 of /healthz rose {delta:.1f} ms with releases running "
            f"({result.quiet.latency.p99_ms:.1f} -> {result.off_loop.latency.p99_ms:.1f} ms), "
            f"over the {target_ms:g} ms allowed"
        )
    for condition in (result.quiet, result.off_loop):
        if condition.latency.errors:
            reasons.append(
                f"{condition.latency.errors} of {condition.latency.probes} /healthz probes "
                f"failed with {condition.name}"
            )
    return StallVerdict(passed=not reasons, reasons=reasons)


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


HEADER = (
    "profile",
    "condition",
    "probes",
    "RSS MB",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p99 from send ms",
    "releases",
    "release median ms",
    "p99 vs no releases ms",
    "verdict",
)


def table_cells(result: StallResult, verdict: StallVerdict | None) -> list[list[str]]:
    """A row per condition; the verdict stands on the row it judges (releases off the loop)."""
    rows = []
    for condition in result.conditions:
        if condition is result.off_loop:
            status = "n/a" if verdict is None else ("PASS" if verdict.passed else "FAIL")
        elif condition is result.on_loop:
            status = "contrast"
        else:
            status = ""
        latency, releases = condition.latency, condition.releases
        rows.append(
            [
                result.profile,
                condition.name,
                str(latency.probes),
                _mb(condition.rss_mb),
                _ms(latency.p50_ms),
                _ms(latency.p99_ms),
                _ms(latency.max_ms),
                _ms(latency.service_p99_ms),
                str(releases.count),
                _ms(releases.median_ms),
                _ms(result.delta_of(condition), signed=True),
                status,
            ]
        )
    return rows


def render_markdown(rows: Sequence[list[str]]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def not_made_row(profile: str, why: str) -> list[str]:
    """A profile that could not be measured; the reason stays readable inside a table cell."""
    cell = " ".join(why.replace("|", "/").split())
    return [profile, f"not made: {cell}", *(["-"] * (len(HEADER) - 3)), "NOT MADE"]
