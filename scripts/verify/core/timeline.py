"""A run's memory timeline: what was sampled, when each phase was, and under which settings.

Written as JSON (the whole record, readable back; the test fixtures are such files) and as CSV
(one row per sample, for a spreadsheet). Bytes and seconds throughout.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.verify.core.phases import Phase, phase_at
from scripts.verify.core.sampling import Sample

FORMAT = 1
CSV_COLUMNS = (
    "t",
    "phase",
    "series",
    "rss_bytes",
    "pss_bytes",
    "uss_bytes",
    "cgroup_usage_bytes",
    "cgroup_working_set_bytes",
    "processes",
    "processes_exited",
)


class TimelineError(ValueError):
    """A timeline file that cannot be read back."""


@dataclass
class Timeline:
    meta: dict[str, Any]
    phases: list[Phase]
    samples: list[Sample]
    extra: dict[str, Any] = field(default_factory=dict)  # load stats, figures, verdicts

    def series(self) -> list[str]:
        """Series names in order of first appearance (one per replica remotely)."""
        seen: dict[str, None] = {}
        for sample in self.samples:
            seen.setdefault(sample.series, None)
        return list(seen)

    def of_series(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.series == name]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "meta": self.meta,
            "phases": [p.as_dict() for p in self.phases],
            "samples": [s.as_dict() for s in self.samples],
            **self.extra,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Timeline:
        if raw.get("format") != FORMAT:
            raise TimelineError(f"timeline format {raw.get('format')!r}, expected {FORMAT}")
        try:
            phases = [
                Phase(str(p["name"]), float(p["start"]), float(p["end"])) for p in raw["phases"]
            ]
            samples = [Sample.from_dict(s) for s in raw["samples"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise TimelineError(f"timeline is malformed: {exc}") from exc
        extra = {k: v for k, v in raw.items() if k not in ("format", "meta", "phases", "samples")}
        return cls(meta=dict(raw.get("meta", {})), phases=phases, samples=samples, extra=extra)


def write_json(path: Path, timeline: Timeline) -> Path:
    path.write_text(json.dumps(timeline.as_dict(), indent=1) + "\n")
    return path


def read_json(path: Path) -> Timeline:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TimelineError(f"cannot read timeline {path}: {exc}") from exc
    return Timeline.from_dict(raw)


def write_csv(path: Path, timeline: Timeline) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for sample in timeline.samples:
            row = sample.as_dict()
            row["phase"] = phase_at(timeline.phases, sample.t) or ""
            writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    return path
