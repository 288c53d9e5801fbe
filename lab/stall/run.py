"""One profile's stall measurement: start the service as the verifier does, then probe /healthz
with no release and with releases running back to back, growing the heap before each block;
optionally the same against the inline-release harness, for contrast.

The two judged conditions run in blocks ordered A B B A in the same process, each block after
a fresh heap growth: load from elsewhere on a shared machine that drifts during the run then
weighs on both conditions alike instead of on whichever ran second.

The service runs with MEMORY_CLEANUP=0, so the only releases are the ones asked for: the
no-release condition is "cleanup off", and the admin releases take the cleanup loop's own path
(a worker thread via asyncio.to_thread).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from app.config import FALLBACK_LIMIT_MB, Settings
from app.memory.measure import MB
from app.workload.settings import BulkSettings
from lab.stall import figures as sf
from lab.stall.inline_release import INLINE_RELEASE_PATH, InlineReleaseServer
from lab.stall.probe import (
    Endpoint,
    HealthzProbe,
    ReleaseDriver,
    grow_heap,
    releases_total,
)
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.local import LocalServer
from scripts.verify.core.progress import Progress

ADMIN_RELEASE_PATH = "/admin/memory/release"
# Cleanup off (only the releases the benchmark asks for), and no access log line per probe.
SERVICE_OVERRIDES = {"MEMORY_CLEANUP": "0", "ACCESS_LOG": "0"}
BLOCK_ORDER = (sf.QUIET, sf.OFF_LOOP, sf.OFF_LOOP, sf.QUIET)


@dataclass(frozen=True)
class StallSettings:
    probes: int = 1000  # per condition, split over its blocks
    interval_s: float = 0.01
    grow_posts: int = 8
    grow_records: int = 20_000  # MAX_BULK_RECORDS: the largest body the service takes
    grow_concurrency: int = 4
    # Releases run back to back, but a new one starts at most this often: once a release takes
    # under a millisecond, an uncapped driver sends hundreds of admin requests a second and the
    # condition measures that request load, not the releases.
    release_every_s: float = 0.05
    inline: bool = True  # also measure the seed's on-loop release, for contrast
    health_timeout_s: float = 60.0


@dataclass
class Block:
    """One block's raw readings: probes, the releases made meanwhile, RSS when it began."""

    latencies_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    errors: int = 0
    release_durations_s: list[float] = field(default_factory=list)
    freed_bytes: list[int] = field(default_factory=list)
    releases: int = 0
    rss_bytes: int = 0


def run_block(
    server: LocalServer,
    endpoint: Endpoint,
    settings: StallSettings,
    probes: int,
    release_path: str | None,
) -> Block:
    """Grow the heap, then probe; with ``release_path``, releases run the whole time."""
    grow_heap(endpoint, settings.grow_posts, settings.grow_records, settings.grow_concurrency)
    assert server.process is not None
    rss = int(psutil.Process(server.process.pid).memory_info().rss)
    before = releases_total(endpoint)
    driver = None
    if release_path is not None:
        driver = ReleaseDriver(endpoint, release_path, settings.release_every_s).start()
    probe = HealthzProbe(endpoint, probes, settings.interval_s)
    thread = threading.Thread(target=probe.run, name="healthz-probe")
    thread.start()
    thread.join()
    if driver is not None:
        driver.stop()
        if driver.errors and not driver.durations_s:
            raise RunNotMade(f"no release via {release_path}: {driver.last_error}")
    record = probe.record
    if record.errors and not record.latencies_s:
        raise RunNotMade(f"/healthz never answered: {record.last_error}")
    return Block(
        latencies_s=record.latencies_s,
        service_s=record.service_s,
        errors=record.errors,
        release_durations_s=driver.durations_s if driver else [],
        freed_bytes=driver.freed_bytes if driver else [],
        releases=releases_total(endpoint) - before,
        rss_bytes=rss,
    )


def condition(name: str, blocks: Sequence[Block]) -> sf.Condition:
    """A condition's figures over all its blocks together."""
    latency = sf.summarize(
        [v for b in blocks for v in b.latencies_s],
        sum(b.errors for b in blocks),
        [v for b in blocks for v in b.service_s],
    )
    durations = [v for b in blocks for v in b.release_durations_s]
    if durations:
        releases = sf.summarize_releases(durations, [v for b in blocks for v in b.freed_bytes])
    else:  # what the service counted: none is expected
        releases = sf.ReleaseSummary(sum(b.releases for b in blocks), None, None)
    rss_mb = min(b.rss_bytes for b in blocks) / MB
    return sf.Condition(name, latency, releases, rss_mb)


def _server(cls: type[LocalServer], profile: str, workdir: Path, log_path: Path) -> LocalServer:
    """Started as the verifier starts it, with the service's own defaults otherwise."""
    workdir.mkdir(parents=True, exist_ok=True)
    defaults = Settings.model_fields
    return cls(
        profile=profile,
        workdir=workdir,
        log_path=log_path,
        cleanup_interval_seconds=float(defaults["memory_cleanup_interval"].default),
        cache_ttl_seconds=float(BulkSettings.model_fields["cache_ttl_seconds"].default),
        limit_mb=FALLBACK_LIMIT_MB,
        overrides=SERVICE_OVERRIDES,
    )


def _measured(
    server: LocalServer,
    settings: StallSettings,
    order: Sequence[str],
    paths: dict[str, str | None],
    progress: Progress,
) -> dict[str, sf.Condition]:
    """Start ``server``, run the blocks in ``order``, stop it; a condition per name."""
    blocks: dict[str, list[Block]] = {name: [] for name in order}
    try:
        server.start()
        server.wait_healthy(settings.health_timeout_s)
        endpoint = Endpoint.of(server.base_url, server.token)
        for name in order:
            share = settings.probes // order.count(name)
            block = run_block(server, endpoint, settings, share, paths[name])
            blocks[name].append(block)
            progress.note(
                f"{name}: {share} probes, RSS {block.rss_bytes / MB:.0f} MB at start, "
                f"{len(block.release_durations_s) or block.releases} releases"
            )
    finally:
        server.stop()
    return {name: condition(name, found) for name, found in blocks.items()}


def run_profile(
    profile: str, settings: StallSettings, out_dir: Path, progress: Progress | None = None
) -> sf.StallResult:
    """All conditions for one profile; RunNotMade if the service cannot be started or probed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(profile, 0)
    workdir = Path(tempfile.mkdtemp(prefix="lean-memory-stall-"))
    paths = {sf.QUIET: None, sf.OFF_LOOP: ADMIN_RELEASE_PATH, sf.ON_LOOP: INLINE_RELEASE_PATH}
    try:
        service = _server(LocalServer, profile, workdir / "service", out_dir / "server.log")
        progress.note(f"service (profile {profile}) on {service.base_url}")
        found = _measured(service, settings, BLOCK_ORDER, paths, progress)
        if settings.inline:
            harness = _server(
                InlineReleaseServer, profile, workdir / "inline", out_dir / "inline.log"
            )
            progress.note(f"inline-release harness on {harness.base_url}, for contrast")
            found |= _measured(harness, settings, (sf.ON_LOOP,), paths, progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return sf.StallResult(profile, found[sf.QUIET], found[sf.OFF_LOOP], found.get(sf.ON_LOOP))
