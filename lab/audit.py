"""Known vulnerabilities in the pinned dependencies: `python -m lab.audit`.

Reads the package index's JSON API, as pip-audit's default service does. pip-audit asks for each
pinned release's document (`<index>/<name>/<version>/json`); some mirrors serve only the
project's document (`<index>/<name>/json`), which lists the known vulnerabilities of the latest
release alone. So each pin is audited from its release's document where there is one, else from
the project's document when the pin is the latest release; a pin behind the latest on such a
mirror cannot be audited, and is reported as such with the release to move to.

  exit 0  every pin audited, no known vulnerability
  exit 1  a pin has a known vulnerability (its id and the releases that fix it are printed)
  exit 2  a pin could not be audited (index unreachable, or behind the latest on a mirror
          without release documents); nothing known against the rest
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_INDEX = "https://pypi.org/pypi"
DEFAULT_LOCKS = (Path("requirements.lock"), Path("requirements-dev.lock"))
EXIT_CLEAN, EXIT_VULNERABLE, EXIT_NOT_AUDITED = 0, 1, 2
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.M)  # extras kept


@dataclass(frozen=True)
class Finding:
    name: str
    version: str
    vulnerabilities: tuple[str, ...] = ()  # "<id> (fixed in ...)"
    not_audited: str | None = None  # why, when the pin could not be audited
    source: str = ""  # which document answered


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def vulnerable(self) -> list[Finding]:
        return [f for f in self.findings if f.vulnerabilities]

    @property
    def not_audited(self) -> list[Finding]:
        return [f for f in self.findings if f.not_audited]

    def exit_code(self) -> int:
        if self.vulnerable:
            return EXIT_VULNERABLE
        return EXIT_NOT_AUDITED if self.not_audited else EXIT_CLEAN


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(paths: Sequence[Path]) -> dict[str, str]:
    """name -> version over the lock files; the same pin twice is one pin."""
    pins: dict[str, str] = {}
    for path in paths:
        for name, version in PIN.findall(path.read_text()):
            pins[canonical(name)] = version
    return dict(sorted(pins.items()))


def fetch(url: str, timeout: float) -> dict[str, Any] | None:
    """The JSON document at ``url``, None if the index has none (404); other failures raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # the index's JSON API
            document: dict[str, Any] = json.loads(response.read())
            return document
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    except json.JSONDecodeError:
        return None  # some mirrors answer 200 with an empty body for a document they lack


def describe(vulnerability: dict[str, Any]) -> str:
    fixed = vulnerability.get("fixed_in") or []
    ident = str(vulnerability.get("id", "unknown id"))
    return f"{ident} (fixed in {', '.join(map(str, fixed))})" if fixed else f"{ident} (no fix)"


def audit_pin(name: str, version: str, index: str, timeout: float) -> Finding:
    try:
        release = fetch(f"{index}/{name}/{version}/json", timeout)
        if release is not None:
            vulns = tuple(describe(v) for v in release.get("vulnerabilities") or [])
            return Finding(name, version, vulns, source="release document")
        project = fetch(f"{index}/{name}/json", timeout)
    except (OSError, urllib.error.URLError) as exc:
        return Finding(name, version, not_audited=f"index unreachable: {exc}")
    if project is None:
        return Finding(name, version, not_audited="not on the index")
    latest = str(project.get("info", {}).get("version", ""))
    if latest != version:
        return Finding(
            name,
            version,
            not_audited=f"behind the latest release {latest}, whose document alone is served",
        )
    vulns = tuple(describe(v) for v in project.get("vulnerabilities") or [])
    return Finding(name, version, vulns, source="project document (pin is the latest)")


def run(pins: dict[str, str], index: str, timeout: float) -> Report:
    return Report([audit_pin(name, version, index, timeout) for name, version in pins.items()])


def render(report: Report) -> str:
    lines = [
        f"{len(report.findings)} pins: {len(report.vulnerable)} with known vulnerabilities, "
        f"{len(report.not_audited)} not audited"
    ]
    for f in report.vulnerable:
        lines.append(f"VULNERABLE {f.name}=={f.version}: {'; '.join(f.vulnerabilities)}")
    for f in report.not_audited:
        lines.append(f"NOT AUDITED {f.name}=={f.version}: {f.not_audited}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.audit",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "locks", nargs="*", type=Path, default=list(DEFAULT_LOCKS), help="lock files to read"
    )
    parser.add_argument("--index", default=DEFAULT_INDEX, help="the index's JSON API root")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.locks if not p.is_file()]
    if missing:
        parser.error(f"no such lock file: {', '.join(missing)}")
    pins = read_pins(args.locks)
    if not pins:
        parser.error("no name==version pins in the lock files")
    report = run(pins, args.index.rstrip("/"), args.timeout)
    sys.stdout.write(render(report) + "\n")
    return report.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
