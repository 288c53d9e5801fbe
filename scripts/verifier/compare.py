"""Every allocator profile in turn, same load, same machine, one table with ratios to `baseline`.

`baseline` (glibc as shipped, no cleanup) is the plain service the others are measured against;
its own verdict is shown but does not decide the exit code: it is expected to keep its spike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.profiles import ProfileSet
from scripts.verifier.errors import RunNotMade
from scripts.verifier.report import Row, rows_for
from scripts.verifier.run import RunResult

BASELINE = "baseline"


@dataclass
class Outcome:
    profile: str
    deploy: bool
    result: RunResult | None = None
    not_made: str | None = None

    def rows(self) -> list[Row]:
        if self.result is None:
            return [Row.not_made(self.profile, self.not_made or "not run")]
        return rows_for(self.result)


def run_all(
    profiles: ProfileSet,
    run_profile: Callable[[str], RunResult],
    names: Sequence[str] | None = None,
) -> list[Outcome]:
    """Run each profile (baseline first, so ratios exist early); one that cannot run is recorded
    with its reason and the rest still run."""
    ordered = list(names or profiles.names)
    if BASELINE in ordered:
        ordered.remove(BASELINE)
        ordered.insert(0, BASELINE)
    outcomes = []
    for name in ordered:
        outcome = Outcome(name, profiles.get(name).deploy)
        try:
            outcome.result = run_profile(name)
        except RunNotMade as exc:
            outcome.not_made = str(exc)
        outcomes.append(outcome)
    return outcomes


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """2 if any profile could not be run, else 1 if a deployable profile failed, else 0."""
    if any(o.result is None for o in outcomes):
        return 2
    deployable = [o for o in outcomes if o.deploy]
    return 0 if all(o.result is not None and o.result.passed for o in deployable) else 1


def all_rows(outcomes: Sequence[Outcome]) -> list[Row]:
    return [row for outcome in outcomes for row in outcome.rows()]
