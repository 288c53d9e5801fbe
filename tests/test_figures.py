"""Every published figure comes from docs/figures.json, the file `python -m scripts.verify
publish` writes from a run: the marked tables are what it gives, and each figure quoted in the
checked prose is one it holds.

A figure here is a number with the unit a measurement carries (MB, KB, ms, req/s, %, a ratio
"1.31x"). Numbers that are settings or targets, not measurements, are listed in SETTINGS with
what they are; a measured number that is missing from the results file fails, whatever it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.memory.budget import DEFAULT_HEADROOM_SHARE, DEFAULT_OUTBOUND_SHARE
from app.memory.pressure import LOW_WATER_SHARE
from app.workload.settings import BulkSettings
from scripts.verify.core.verdict import IDLE_TARGET_RATIO
from scripts.verify.publish import (
    DOCUMENTS,
    KINDS,
    entries,
    figures,
    load,
    marked,
    marker,
    rewrite,
    views,
)
from tests.container.test_image import IDLE_MAX_SHARE_OF_LIMIT, IDLE_MAX_SHARE_OF_PEAK_RSS
from tests.integration.test_outbound import MIN_HEALTH_SHARE

REPO = Path(__file__).resolve().parents[1]
DATA = load()
PAGES = sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))
# Every page under docs/, the README and the profiles' comments.
CHECKED = ("README.md", "profiles/profiles.toml", *PAGES)
FIGURE = re.compile(
    r"(?<![\w.])(?:(\d[\d,]*(?:\.\d+)?)[-–])?(\d[\d,]*(?:\.\d+)?)"
    r"(?:(x)\b|(%)|\s?(MB|KB|ms|req/s|/s)\b)"
)
# Settings and targets written with a measurement's unit, and what each one is.
SETTINGS: dict[str, str] = {
    "1.5x": "the idle target: at most 1.5x the fresh start (verdict.IDLE_TARGET_RATIO)",
    "0.6x": "the peak target: at most 0.6x plain glibc's",
    "0.95x": "the throughput target: at least 0.95x baseline's",
    "1.1x": "the latency target: p99 at most 1.1x baseline's",
    "100 ms": "the /healthz p99 target during the spike",
    "250 ms": "the /healthz max target during the spike",
    "500 MB": "the memory limit the starter is built for (Railway's Free plan)",
    "50 ms": "the interval of the verifier's /healthz probe",
    "46x": "a count in an example of the verifier's message (docs/verify.md)",
    "6%": "the outbound part's default share of the limit (budget.DEFAULT_OUTBOUND_SHARE)",
    "15%": "the bound per slow reader, of the value, in tests/memory/test_outbound_servers.py",
    "60%": "the container test's bound on idle, of the limit (IDLE_MAX_SHARE_OF_LIMIT)",
    "90%": "the container test's bound on idle RSS, of its peak (IDLE_MAX_SHARE_OF_PEAK_RSS)",
    "64 MB": "CACHE_MAX_MB's default: the hot results cache, for the whole service",
    "10%": "the headroom's default share of the limit (budget.DEFAULT_HEADROOM_SHARE)",
    "5%": "pressure's hysteresis: shedding stops that far below its mark (LOW_WATER_SHARE)",
    "95%": "the share of /healthz probes an attack must leave answered (test_outbound)",
}


def quoted(path: str) -> list[tuple[int, str]]:
    """(line number, figure) for each figure in ``path`` outside its marked tables."""
    text = (REPO / path).read_text()
    for name in entries(DATA):
        for view in views(name):
            text = marked(view).sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in FIGURE.finditer(line):
            low, value, ratio, share, unit = match.groups()
            suffix = ratio or share or f" {unit}"
            found += [(number, v + suffix) for v in (low, value) if v]  # a range: both ends
    return found


def held(figure: str, cells: set[str]) -> bool:
    number = figure.split()[0].removesuffix("x").replace(",", "")
    return number in cells or figure in cells or f"{number}x" in cells


def test_the_results_file_holds_every_kind_and_only_runs_of_the_tools() -> None:
    assert set(DATA) >= set(KINDS), f"docs/figures.json lacks {set(KINDS) - set(DATA)}"
    assert set(entries(DATA)) == set(DATA), "docs/figures.json holds what is no published run"
    for name, entry in DATA.items():
        assert entry["command"].startswith("python -m scripts.verify "), name


@pytest.mark.parametrize("name", sorted(entries(DATA)))
def test_each_entry_has_a_table_and_every_marked_table_is_what_the_file_gives(name: str) -> None:
    documents = [
        path for path in DOCUMENTS if any(marker(v).search(path.read_text()) for v in views(name))
    ]
    assert documents, f"no document shows the {name} table"
    for path in documents:
        text = path.read_text()
        assert rewrite(text, name, DATA[name]) == text, (
            f"{path.name}: the {name} table is not the published one: "
            "python -m scripts.verify publish writes it"
        )


@pytest.mark.parametrize("path", CHECKED)
def test_every_figure_quoted_is_one_the_results_file_holds(path: str) -> None:
    cells = {cell.removesuffix("x") for cell in figures(DATA)} | set(figures(DATA))
    missing = [
        f"{path}:{line}: {figure}"
        for line, figure in quoted(path)
        if figure not in SETTINGS and not held(figure, cells)
    ]
    assert not missing, "figures no published run holds:\n" + "\n".join(missing)


def test_the_settings_listed_are_the_codes() -> None:
    """A setting quoted in prose is the one the code has: a changed default fails here."""
    for value in (
        f"{IDLE_TARGET_RATIO:g}x",
        f"{DEFAULT_OUTBOUND_SHARE:.0%}",
        f"{DEFAULT_HEADROOM_SHARE:.0%}",
        f"{1 - LOW_WATER_SHARE:.0%}",
        f"{MIN_HEALTH_SHARE:.0%}",
        f"{IDLE_MAX_SHARE_OF_LIMIT:.0%}",
        f"{IDLE_MAX_SHARE_OF_PEAK_RSS:.0%}",
        f"{BulkSettings.model_fields['cache_max_mb'].default:g} MB",
    ):
        assert value in SETTINGS, value


def test_every_setting_listed_is_still_quoted() -> None:
    everywhere = {figure for path in CHECKED for _, figure in quoted(path)}
    assert not set(SETTINGS) - everywhere, "SETTINGS lists what no checked file quotes"
