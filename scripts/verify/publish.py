"""Publish a run into docs/figures.json, the one source of every figure the project quotes.

`python -m scripts.verify publish results/<run> --as bench` copies what a run wrote (compare's
summary.json, the overload mode's overload.json, the soak's soak.json) into docs/figures.json
under that name, with the command that made it, and rewrites every table marked for that name
in the README and docs/ from it:

    <!-- figures:bench -->
    ...written here, never by hand...
    <!-- /figures:bench -->

A name is a kind of run, or a kind and a label for another run of it (`--as flood:hostile`,
marked `<!-- figures:flood:hostile -->`). Several runs of one command, given together, are one
entry whose table has each run's rows in the order given: repeats of a run taken in turn with
another (A B A B), published as A's entry and B's.

tests/test_figures.py checks that each marked table is what the file gives and that each
figure quoted in the checked prose is one the file holds. A figure measured by hand has no
place in those files: run the tool, publish, then quote it.

  exit 0  published
  exit 2  not published (no such run, a run of another kind, a table marker left open)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.verify import flags
from scripts.verify.core import report, spread
from scripts.verify.core.errors import EXIT_NOT_MADE
from scripts.verify.overload.command import (
    COLUMNS,
    COST_COLUMNS,
    SLOW_BODY_COLUMNS,
    SLOW_COLUMNS,
    cost_cells,
    flood_cells,
    render,
    slow_body_cells,
    slow_cells,
)
from scripts.verify.soak import report as soak_report

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "figures.json"
# Where marked tables may be: the README and the lab reports under docs/.
DOCUMENTS: tuple[Path, ...] = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

# What each kind of run is published as, and the file a run of that kind leaves.
KINDS: Mapping[str, str] = {
    "bench": "summary.json",
    "flood": "overload.json",
    "slow-readers": "overload.json",
    "slow-bodies": "overload.json",
    "cost": "overload.json",
    "soak": "soak.json",
}
# The overload mode's runs each kind keeps, by their "kind" in overload.json.
OVERLOAD_RUNS: Mapping[str, str] = {
    "flood": "flood", "slow-readers": "slow_readers", "slow-bodies": "slow_bodies", "cost": "cost",
}  # fmt: skip


LABEL = re.compile(r"[a-z0-9][a-z0-9-]*")


class NotPublished(Exception):
    """A run that cannot be published, with the reason in one line."""


def load(path: Path = FIGURES) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def kind_of(name: str) -> str:
    """The kind of run a published name holds: ``flood:hostile`` is a flood."""
    kind, _, label = name.partition(":")
    if kind not in KINDS or (label and not LABEL.fullmatch(label)) or name.endswith(":"):
        raise NotPublished(
            f"{name!r} is not a name to publish as: one of {', '.join(sorted(KINDS))}, "
            "or one of them, a colon and a label of lower-case letters, digits and dashes"
        )
    return kind


def entries(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The published runs of the results file, by name (every key of it is one)."""
    return {name: entry for name, entry in data.items() if name.partition(":")[0] in KINDS}


def entry_of(run_dir: Path, kind: str, command: str | None = None) -> dict[str, Any]:
    """What the results file keeps of one run: the command that made it, its context (settings,
    date, machine) and its data."""
    source = run_dir / KINDS[kind]
    if not source.is_file():
        raise NotPublished(f"{source} does not exist: is {run_dir} a run of kind {kind!r}?")
    data = json.loads(source.read_text())
    context = list(data["context"])
    said = [line for line in context if line.startswith("command: ")]
    if command is None and not said:
        raise NotPublished(f"{source} does not name its command: give it with --command")
    command = command or said[0].removeprefix("command: ").strip("`")
    command = re.sub(r" --out[= ]\S+", "", command)  # where a run was written is not what it ran
    # Paths inside this repository as a reader names them: the machine's checkout means nothing
    # in the repository's own results file.
    context = [line.replace(f"{ROOT}/", "") for line in context if not line.startswith("command: ")]
    entry: dict[str, Any] = {"source": run_dir.name, "command": command, "context": context}
    if kind == "bench":
        entry |= {"title": data["title"], "baseline": data["baseline"], "rows": data["rows"]}
        report.rows_of(entry)  # an unreadable row is refused here, not when a test renders it
    elif kind == "soak":
        entry |= {k: data[k] for k in ("label", "header", "rows", "lines")}
    else:
        entry["runs"] = [run for run in data["runs"] if run.get("kind") == OVERLOAD_RUNS[kind]]
        if not entry["runs"]:
            raise NotPublished(f"{source} holds no {kind} run")
        table(kind, entry)  # likewise
    return entry


def entry_of_runs(
    run_dirs: Sequence[Path], kind: str, command: str | None = None
) -> dict[str, Any]:
    """One entry for several runs of one command: the runs' rows in the order given, the context
    lines of each. Only the overload mode's runs add up; a bench or a soak is one run."""
    first = entry_of(run_dirs[0], kind, command)
    if len(run_dirs) == 1:
        return first
    if "runs" not in first:
        raise NotPublished(f"a {kind} entry is one run: give one results directory")
    for run_dir in run_dirs[1:]:
        more = entry_of(run_dir, kind, command)
        if more["command"] != first["command"]:
            raise NotPublished(
                f"{run_dir.name} ran `{more['command']}`, not `{first['command']}`: "
                "one entry holds repeats of one command"
            )
        first["runs"] += more["runs"]
        first["context"] += [line for line in more["context"] if line not in first["context"]]
    first["source"] = ", ".join(run_dir.name for run_dir in run_dirs)
    return first


def table(kind: str, entry: Mapping[str, Any]) -> str:
    """The Markdown table of a published entry, exactly as the run printed it."""
    kind = kind_of(kind)
    if kind == "bench":  # with what stayed after each row's load, and what would help
        rows = report.rows_of(entry)
        stayed = [f"- {row.label}: {row.stayed}" for row in rows if row.stayed]
        rendered = report.render_markdown(rows, entry.get("baseline"))
        parts = [rendered, "", *stayed] if stayed else [rendered]
        if (section := spread.section(rows)) is not None:  # a run with rounds: each setup's
            parts += ["", section]  # mean and spread under the rounds
        return "\n".join(parts)
    if kind == "soak":
        return soak_report.render_cells(entry["header"], entry["rows"])
    if kind == "flood":
        return render([flood_cells(run) for run in entry["runs"]], COLUMNS)
    if kind == "cost":
        return render([cost_cells(run) for run in entry["runs"]], COST_COLUMNS)
    if kind == "slow-bodies":
        return render([slow_body_cells(run) for run in entry["runs"]], SLOW_BODY_COLUMNS)
    return render([slow_cells(run) for run in entry["runs"]], SLOW_COLUMNS)


def cells(kind: str, entry: Mapping[str, Any]) -> list[str]:
    """Every cell of the entry's table, a figure and its bracketed ratio apart."""
    lines = [line for line in table(kind, entry).splitlines()[2:] if line.startswith("|")]
    found = []
    for line in lines:
        for cell in line.strip("|").split("|"):
            found += re.findall(r"[^\s()]+", cell)
    return found


def figures(data: Mapping[str, Any]) -> set[str]:
    """Every figure the results file holds: as its tables print it, and the numbers its runs'
    settings and verdicts name (a body's size, a run's length, a soak's drift)."""
    found = set()
    for name, entry in entries(data).items():
        found |= set(cells(name, entry))
        said = [*entry["context"], *entry.get("lines", [])]  # a soak's drift and verdict
        rows = [row for row in entry.get("rows", []) if isinstance(row, dict)]
        said += [str(row.get("stayed") or "") for row in rows]  # what stayed, and why a row
        said += [str(reason) for row in rows for reason in row.get("reasons", ())]  # failed
        numbers = [n for line in said for n in re.findall(r"\d+(?:\.\d+)?%?", line)]
        found |= {*numbers, *(n.removesuffix("%") for n in numbers)}  # "+3.2%" holds 3.2%
    return found


def marker(name: str, closing: bool = False) -> re.Pattern[str]:
    """A marker on a line of its own: one quoted in prose is not a marker."""
    slash = "/" if closing else ""
    return re.compile(rf"^<!-- {slash}figures:{re.escape(name)} -->$", re.M)


def marked(name: str) -> re.Pattern[str]:
    opening, closing = marker(name).pattern, marker(name, closing=True).pattern
    return re.compile(rf"({opening}\n).*?({closing})", re.S | re.M)


def setups_table(name: str, entry: Mapping[str, Any]) -> str:
    """A bench run's setups alone, each one's mean and spread over its rounds: what a page shows
    where the rounds themselves would be too long (marked ``<!-- figures:NAME setups -->``)."""
    section = spread.section(report.rows_of(entry)) if kind_of(name) == "bench" else None
    if section is None:
        raise NotPublished(f"{name} has no setups: only a bench run in rounds has")
    return section


def views(name: str) -> tuple[str, str]:
    """The markers a published entry may have on a page: its whole table, its setups alone."""
    return name, f"{name} setups"


def rewrite(text: str, name: str, entry: Mapping[str, Any]) -> str:
    """``text`` with every table marked for ``name`` written from ``entry``: its whole table, or
    under a ``setups`` marker each setup's mean and spread."""
    renderers: tuple[Callable[[str, Mapping[str, Any]], str], ...] = (table, setups_table)
    for marked_as, rendered_by in zip(views(name), renderers, strict=True):
        opened = len(marker(marked_as).findall(text))
        if opened != len(marker(marked_as, closing=True).findall(text)):
            raise NotPublished(f"a <!-- figures:{marked_as} --> marker is not closed")
        if opened:
            text = _filled(text, marked_as, rendered_by(name, entry))
    return text


def _filled(text: str, marked_as: str, body: str) -> str:
    return marked(marked_as).sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def rewritten(data: Mapping[str, Any], documents: Iterable[Path]) -> dict[Path, str]:
    """Each document whose marked tables change, with its new text; nothing is written, so a
    marker left open refuses the whole publication before any file changes."""
    changed = {}
    for path in documents:
        before = path.read_text()
        after = before
        for name, entry in entries(data).items():
            after = rewrite(after, name, entry)
        if after != before:
            changed[path] = after
    return changed


def write_tables(data: Mapping[str, Any], documents: Iterable[Path] = DOCUMENTS) -> list[Path]:
    """Rewrite each document's marked tables; returns the documents that changed."""
    changed = rewritten(data, documents)
    for path, text in changed.items():
        path.write_text(text)
    return list(changed)


def publish(
    run_dirs: Sequence[Path],
    name: str,
    command: str | None = None,
    path: Path = FIGURES,
    documents: Iterable[Path] = DOCUMENTS,
) -> list[Path]:
    """Keep the runs in the results file under ``name``; rewrite the tables marked for it. The
    pages are checked first: a run or a page that cannot be published changes no file."""
    data = load(path)
    data[name] = entry_of_runs(run_dirs, kind_of(name), command)
    pages = rewritten(data, documents)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    for page, text in pages.items():
        page.write_text(text)
    return [path, *pages]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", type=Path, nargs="+",
        help="a run's results directory (results/<timestamp>); for an overload run, several "
        "runs of one command make one entry",
    )  # fmt: skip
    parser.add_argument(
        "--as", dest="name", required=True,
        help="bench: a `compare` run; flood, slow-readers, slow-bodies, cost: an `overload` "
        "run's floods, slow readers, slow-body floods or body costs; soak: a `soak` run; "
        "KIND:LABEL: another run of that kind (flood:hostile)",
    )  # fmt: skip
    parser.add_argument(
        "--command",
        dest="made_by",
        help="the command that made the run, when its context does not name it",
    )


@dataclass(frozen=True)
class PublishOptions:
    """publish's options, read once from the Namespace: the runs, the name they are published
    under (--as) and the command that made them (--command), if given."""

    runs: tuple[Path, ...]
    name: str
    made_by: str | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> PublishOptions:
        return cls(tuple(args.runs), args.name, args.made_by)


def check(parser: argparse.ArgumentParser, options: PublishOptions) -> None:
    for run_dir in options.runs:
        if not run_dir.is_dir():
            parser.error(f"{run_dir} is not a directory")
    try:
        kind_of(options.name)
    except NotPublished as exc:
        parser.error(f"--as: {exc}")


def run(options: PublishOptions) -> int:
    try:
        written = publish(options.runs, options.name, options.made_by)
    except (NotPublished, KeyError, ValueError) as exc:
        sys.stderr.write(f"publish: not published: {exc}\n")
        return EXIT_NOT_MADE
    for path in written:
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


SUMMARY = "publish a run into docs/figures.json and rewrite the tables written from it"
COMMAND = flags.Command(
    "publish", SUMMARY, __doc__ or "", add_arguments, PublishOptions.of, check, run
)
