"""What the verifier takes from a service's status route before and after a run: its own cleanup
interval (the idle window must hold two of them), and when its releases ran."""

from __future__ import annotations

from pathlib import Path

from scripts.verify.core.modes import fit_idle, preset_note, release_seconds
from scripts.verify.core.presets import PRESETS
from scripts.verify.core.run import RunSettings
from scripts.verify.core.served import Served
from scripts.verify.core.verdict import Criteria


def settings(tmp_path: Path) -> RunSettings:
    return RunSettings("command", PRESETS["short"], Criteria(), "pss", tmp_path)


def test_a_service_that_keeps_a_longer_interval_gets_an_idle_window_of_two(
    tmp_path: Path,
) -> None:
    short = settings(tmp_path)
    assert short.preset.plan.idle_seconds == 20
    kept = fit_idle(short, {"cleanup": {"interval_seconds": 60.0}})
    assert kept.preset.plan.idle_seconds == 2 * 60 + 10
    assert kept.preset.plan.hold_seconds == short.preset.plan.hold_seconds
    assert fit_idle(short, {"cleanup": {"interval_seconds": 5.0}}) is short  # the preset's own
    assert fit_idle(short, None) is short  # no status route: the preset's window


def test_releases_are_placed_in_the_runs_seconds(tmp_path: Path) -> None:
    document = {
        "releases": [
            {"started_at": 1_000.0},  # before the run: not this run's
            {"started_at": 1_031.25},
            {"started_at": 1_040.0},
            {"started_at": None},
        ]
    }
    assert release_seconds(document, 1_010.0) == [21.2, 30.0]
    assert release_seconds(None, 1_010.0) == []


def test_the_console_names_what_the_preset_changes_and_what_the_service_runs(
    tmp_path: Path,
) -> None:
    served = Served("glibc", tmp_path / "log", 5, 10, 500)
    said = preset_note(settings(tmp_path), served, {"cleanup": {"interval_seconds": 5.0}})
    assert "MEMORY_CLEANUP_INTERVAL=5" in said and "CACHE_TTL_SECONDS=10" in said
    assert "5 s cleanup interval" in said and "idle window 20 s" in said
    assert "not known" in preset_note(settings(tmp_path), served, None)
