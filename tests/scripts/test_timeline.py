"""Timeline files: JSON reads back what was written; CSV has one row per sample with its phase."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scripts.verify.core.phases import run_phases
from scripts.verify.core.sampling import Sample
from scripts.verify.core.timeline import (
    CSV_COLUMNS,
    Timeline,
    TimelineError,
    read_json,
    write_csv,
    write_json,
)


def small_timeline() -> Timeline:
    samples = [
        Sample(t=float(t), rss_bytes=100 + t, pss_bytes=90 + t, series=series)
        for t in range(6)
        for series in ("r1 pid 7", "r2 pid 7")
    ]
    return Timeline(
        meta={"metric": "pss", "limit_mb": 500},
        phases=run_phases(0.0, 1.0, 1.0, 3.0, 5.0),
        samples=samples,
        extra={"load": {"requests": 3}},
    )


def test_json_reads_back_what_was_written(tmp_path: Path) -> None:
    original = small_timeline()
    again = read_json(write_json(tmp_path / "t.json", original))
    assert again.samples == original.samples
    assert again.phases == original.phases
    assert again.meta == original.meta
    assert again.extra == {"load": {"requests": 3}}
    assert again.series() == ["r1 pid 7", "r2 pid 7"]
    assert len(again.of_series("r2 pid 7")) == 6


def test_csv_has_a_row_per_sample_with_its_phase(tmp_path: Path) -> None:
    with write_csv(tmp_path / "t.csv", small_timeline()).open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 12
    assert [r["phase"] for r in rows[::2]] == ["baseline", "ramp", "hold", "idle", "idle", "idle"]
    assert rows[0]["uss_bytes"] == ""


def test_another_format_or_a_broken_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**small_timeline().as_dict(), "format": 99}))
    with pytest.raises(TimelineError, match="format"):
        read_json(path)
    path.write_text("{not json")
    with pytest.raises(TimelineError):
        read_json(path)
    path.write_text(json.dumps({"format": 1, "phases": [{"name": "idle"}], "samples": []}))
    with pytest.raises(TimelineError):
        read_json(path)
